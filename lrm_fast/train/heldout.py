"""Held-out PSNR while training: every ``TrainConfig.eval_every`` steps, a few held-out objects
(``eval_objects`` of ``eval_recipe``, seed ``HELDOUT_SEED``) are reconstructed and rendered by
``evaluate.evaluate_set``, the benchmark's own function (same input path as a user's PNG), at a small
size (``eval_views`` side views at ``eval_resolution`` px) so it costs a few seconds.

The result goes to ``log.jsonl`` as an ``{"event": "heldout", ...}`` record (PSNR, IoU, colour MAE,
the all-white PSNR) and into the progress bar's description, which ``fit`` leaves alone, so it shows
next to tqdm's ETA whatever the bar's postfix holds. The seed is neither the training data's (0) nor
the benchmark's (1000, 1001): watching a run must not tune it to the benchmark's objects.

Runs on rank 0 only, under ``torch.random.fork_rng`` (a resumed run replays the same losses whether or
not it evaluated), and gives the model back in training mode.
"""
from __future__ import annotations

import time

import torch

from .evaluate import evaluate_set

HELDOUT_SEED = 1002


def heldout_progress(trainer, bar=None) -> dict | None:
    """Evaluate ``trainer.model`` on the small held-out set when ``trainer.step`` is a multiple of
    ``cfg.eval_every`` (or the last step); log it and show its PSNR on ``bar``. Returns the log record,
    or None when this step has no evaluation (``eval_every: 0``, another step, another rank)."""
    cfg = trainer.cfg
    if not cfg.eval_every or trainer.rank != 0 or (trainer.step % cfg.eval_every and trainer.step != cfg.steps):
        return None
    model = trainer.model
    t0 = time.perf_counter()
    devices = [trainer.device] if trainer.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        r = evaluate_set(model, HELDOUT_SEED, cfg.eval_objects, views=cfg.eval_views, resolution=cfg.eval_resolution,
                         batch=min(cfg.eval_objects, 4), recipe=cfg.eval_recipe)
    model.train()
    rec = {"event": "heldout", "step": trainer.step, "recipe": cfg.eval_recipe, "objects": cfg.eval_objects,
           "psnr": r["psnr"], "iou": r["iou"], "colour_mae": r["colour_mae"], "white_psnr": r["white"]["psnr"],
           "seconds": time.perf_counter() - t0}
    trainer._log(rec)
    if bar is not None:
        bar.set_description(f"train (held-out {r['psnr']:.2f} dB, IoU {r['iou']:.2f})", refresh=False)
    return rec
