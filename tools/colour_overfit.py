"""Does the demo recipe learn colour? Overfit it on 4 objects of clearly different colours.

    ./run python tools/colour_overfit.py --steps 300 [--set lr=3e-4 --set mask_weight=0] \
        [--model-set field.hidden=32] [--res 32] [--views 8]

Writes 4 single-colour objects (``lrm_fast.data.synthetic.make_color_set``: red, green, blue,
yellow shapes of the demo recipe) to a temporary folder, trains ``configs/demo.yaml`` on them (with
the ``--set`` overrides of the train config and ``--model-set`` overrides of the model config), and
prints every ``--every`` steps the training loss terms, the gradient norm of each module (before
clipping; the field's last layer split into its density row and its three rgb rows) and at the end,
on every training view of every object rendered whole on white: PSNR, and per object the mean
predicted colour of the true foreground against the true mean colour.

The training runs of docs/demo/colour.md's table were made with this script (the free-triplane
run and the initialisation measurements there came from one-off scripts).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _nested(pairs: list[str]) -> dict:
    out: dict = {}
    for p in pairs:
        key, _, val = p.partition("=")
        d = out
        *head, last = key.split(".")
        for h in head:
            d = d.setdefault(h, {})
        d[last] = _value(val)
    return out


def module_grad_norms(model) -> dict:
    """Gradient norm of each top-level module; the field's last layer split into density and rgb."""
    groups: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        top = name.split(".")[0]
        groups[top] = groups.get(top, 0.0) + float(p.grad.detach().float().square().sum())
    last = model.field.linears[-1]
    if last.weight.grad is not None:
        gw, gb = last.weight.grad, last.bias.grad
        groups["field.last.density"] = float(gw[0].square().sum() + gb[0].square())
        groups["field.last.rgb"] = float(gw[1:4].square().sum() + gb[1:4].square().sum())
    return {k: v ** 0.5 for k, v in groups.items()}


def evaluate_colours(trainer, root: str, res: int) -> dict:
    from lrm_fast.train.evaluate import training_view_colours

    return training_view_colours(trainer.model, root, res)


def run(steps: int, res: int, views: int, train_set: dict, model_set: dict, every: int, seed: int = 0,
        root: str | None = None, out_dir: str | None = None, quiet: bool = False, colors=None) -> dict:
    from lrm_fast.data.synthetic import make_color_set
    from lrm_fast.train.config import TrainConfig
    from lrm_fast.train.trainer import Trainer

    tmp = tempfile.mkdtemp(prefix="colour_overfit_")
    root = root or os.path.join(tmp, "data")
    if not os.path.exists(os.path.join(root, "meta.json")):
        make_color_set(root, n_views=views, resolution=res, seed=seed, **({"colors": colors} if colors else {}))
    d = {"data_root": root, "out_dir": out_dir or os.path.join(tmp, "run"), "steps": steps, "render_size": res,
         "progress": False, "ckpt_every": 10 ** 9, "log_every": every, "max_minutes": None, "seed": seed}
    if model_set:
        d["model_overrides"] = model_set
    d.update(train_set)
    cfg = TrainConfig.load(os.path.join(REPO, "configs", "demo.yaml"), d)
    if cfg.patch is not None and cfg.patch > cfg.render_size:
        cfg.patch = None
    trainer = Trainer(cfg)
    trainer.save = lambda reason="periodic": None  # no checkpoints: a measurement
    norms: dict = {}
    clip = torch.nn.utils.clip_grad_norm_

    def clip_and_measure(params, max_norm, *a, **k):
        norms.clear()
        norms.update(module_grad_norms(trainer.model))
        return clip(params, max_norm, *a, **k)

    torch.nn.utils.clip_grad_norm_ = clip_and_measure
    t0 = time.perf_counter()
    history = []
    try:
        for batch in trainer.batches():
            stats = trainer.train_step(batch)
            if trainer.step % every == 0 or trainer.step == steps:
                rec = {"step": trainer.step, **{k: round(float(v), 4) for k, v in stats.items()},
                       "grad": {k: float(f"{v:.3g}") for k, v in norms.items()},
                       "s": round(time.perf_counter() - t0, 1)}
                history.append(rec)
                if not quiet:
                    print(json.dumps(rec), flush=True)
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
        torch.set_num_threads(trainer._threads_before)
    ev = evaluate_colours(trainer, root, res)
    ev["seconds"] = time.perf_counter() - t0
    ev["history"] = history
    if not quiet:
        print(f"PSNR on the training views {ev['psnr']:.2f} dB; max colour error {ev['max_colour_err']:.3f} "
              f"({ev['seconds']:.0f} s)")
        for o in ev["objects"]:
            print(f"  {o['uid']}: pred {[round(x, 3) for x in o['pred']]} true {[round(x, 3) for x in o['true']]} "
                  f"err {o['err']:.3f} psnr {o['psnr']:.2f} fg opacity {o['opacity']:.2f} "
                  f"colour under the opacity {[round(x, 3) for x in o['own']]}")
    return ev


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--res", type=int, default=32, help="view resolution on disk and supervised")
    ap.add_argument("--views", type=int, default=8, help="views per object on disk")
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--set", action="append", default=[], help="train config override key=value")
    ap.add_argument("--model-set", action="append", default=[], help="model override section.key=value")
    ap.add_argument("--data", help="reuse this data folder (written if missing)")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--objects", type=int, default=4, help="use the first N of the 4 colours")
    a = ap.parse_args(argv)
    from lrm_fast.data.synthetic import DISTINCT_COLORS

    ev = run(a.steps, a.res, a.views, _nested(a.set), _nested(a.model_set), a.every, root=a.data,
             colors=DISTINCT_COLORS[:a.objects])
    if a.json:
        tmp = f"{a.json}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(ev, f, indent=1)
        os.replace(tmp, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
