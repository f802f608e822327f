"""After a training run: weights, evaluation against the shipped model and the baselines, pictures,
curves, in one folder of at most 7 files (what ``tools/train_demo_gpu.sh`` hands back).

    python -m lrm_fast.train.report RUN_DIR OUT_DIR [--objects 100 --shifted 50 --compare lrm_fast/assets/demo] [--recipe rich]

``OUT_DIR`` gets ``model.safetensors`` + ``config.json`` (the run's exported model), ``eval.json``
(``{"new": benchmark, "compare": benchmark of the compared model, "better": "new" | "compare"}``),
``pictures.png``, ``curves.png`` (when matplotlib is installed) and ``extras.tar.gz`` (the run's
log.jsonl, the tables as text, the compared model's pictures). Every step is independent: a step
that fails is reported in ``eval.json["errors"]`` and the others still run. Files are atomic.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import sys
import tarfile
import time
import traceback

import torch

from ..api import load_model
from ..io.export import atomic_path
from .evaluate import EVAL_RECIPES, benchmark, format_table, write_json
from .pictures import make_pictures, plot_curves


def _copy_atomic(src: str, dst: str) -> None:
    tmp = atomic_path(dst)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def better_of(new: dict, old: dict) -> str:
    """``"new"`` when the new model's in-distribution PSNR is higher (ties: IoU), else ``"compare"``."""
    a, b = new["in_distribution"], old["in_distribution"]
    return "new" if (a["psnr"], a["iou"]) > (b["psnr"], b["iou"]) else "compare"


def report(run_dir: str, out_dir: str, objects: int = 100, shifted: int = 50, compare: str | None = None,
           device: str = "auto", lpips_weights: str | None = None, backend: str = "auto",
           recipe: str = "demo") -> dict:
    os.makedirs(out_dir, exist_ok=True)
    res: dict = {"run": run_dir, "errors": []}
    extras: dict[str, bytes] = {}
    t0 = time.perf_counter()

    def step(name, fn):
        t = time.perf_counter()
        try:
            out = fn()
            print(f"[report] {name}: ok ({time.perf_counter() - t:.1f} s)", flush=True)
            return out
        except Exception as e:  # one failing step must not lose the others' outputs
            res["errors"].append(f"{name}: {type(e).__name__}: {e}")
            print(f"[report] {name}: FAILED\n{traceback.format_exc()}", flush=True)
            return None

    model_dir = os.path.join(run_dir, "model")
    for f in ("model.safetensors", "config.json"):
        step(f"copy {f}", lambda f=f: _copy_atomic(os.path.join(model_dir, f), os.path.join(out_dir, f)))
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    model = step("load new model", lambda: load_model(out_dir, device=dev, dtype="fp32", backend=backend))
    if model is not None:
        res["new"] = step("evaluate new model", lambda: benchmark(model, objects, shifted, lpips_weights=lpips_weights,
                                                                  progress=True, recipe=recipe))
        step("pictures", lambda: make_pictures(model, os.path.join(out_dir, "pictures.png"),
                                               title=f"new model ({run_dir})"))
    if compare:
        old = step("load compared model", lambda: load_model(compare, device=dev, dtype="fp32", backend=backend))
        if old is not None:
            res["compare"] = step("evaluate compared model",
                                  lambda: benchmark(old, objects, shifted, lpips_weights=lpips_weights, progress=True,
                                                    recipe=recipe))
            res["compare_model"] = compare
            tmp = os.path.join(out_dir, ".compare-pictures.png")
            if step("compared model's pictures", lambda: make_pictures(old, tmp, title=f"compared: {compare}")):
                with open(tmp, "rb") as f:
                    extras["pictures-compare.png"] = f.read()
                os.remove(tmp)
    if res.get("new") and res.get("compare"):
        res["better"] = better_of(res["new"], res["compare"])
    log = os.path.join(run_dir, "log.jsonl")
    if os.path.exists(log) and importlib.util.find_spec("matplotlib") is None:
        res["skipped"] = ["curves.png: matplotlib is not installed"]
    elif os.path.exists(log):
        step("curves", lambda: plot_curves({"train": log}, os.path.join(out_dir, "curves.png"),
                                           title=f"training ({run_dir})"))
        with open(log, "rb") as f:
            extras["log.jsonl"] = f.read()
    tables = "\n\n".join(f"## {k}\n\n{format_table(res[k])}" for k in ("new", "compare") if res.get(k))
    extras["tables.md"] = tables.encode()
    res["seconds"] = time.perf_counter() - t0
    write_json(res, os.path.join(out_dir, "eval.json"))

    def tar():
        path = os.path.join(out_dir, "extras.tar.gz")
        tmp = atomic_path(path)
        with tarfile.open(tmp, "w:gz") as tf:
            for name, data in extras.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = int(time.time())
                tf.addfile(info, io.BytesIO(data))
        os.replace(tmp, path)
    step("extras.tar.gz", tar)
    print(tables, flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="weights + evaluation + pictures + curves of a training run")
    ap.add_argument("run", help="training out_dir (holds model/ and log.jsonl)")
    ap.add_argument("out", help="folder for the results (at most 7 files)")
    ap.add_argument("--objects", type=int, default=100)
    ap.add_argument("--shifted", type=int, default=50)
    ap.add_argument("--compare", default=None, help="another model to evaluate the same way (e.g. the shipped one)")
    ap.add_argument("--recipe", default="demo", choices=EVAL_RECIPES, help="held-out recipe (lrm-fast eval --recipe)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backend", default="auto", help="auto | fast | reference (ops backend of the models)")
    ap.add_argument("--lpips-weights", default=os.environ.get("LRM_LPIPS_WEIGHTS"))
    args = ap.parse_args(argv)
    res = report(args.run, args.out, args.objects, args.shifted, args.compare, args.device, args.lpips_weights, args.backend,
                 args.recipe)
    return 0 if not res["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
