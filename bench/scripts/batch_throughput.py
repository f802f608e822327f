"""Images/s of ``reconstruct_many`` at batch 1 vs batch N, same process, same images.

    python -m bench.scripts.batch_throughput                        # demo (shipped) and base (random weights)
    python -m bench.scripts.batch_throughput --presets demo --images 8 --batch 1,8 --rounds 2

Per preset: one warm-up image, then ``rounds`` alternating runs of each batch size over the same
``images`` inputs (copies of the shipped sample under different names, decoded by the DataLoader
workers), each into a fresh output folder (so nothing is skipped). Two output settings:
``triplane`` (image -> triplane only: what batching speeds up) and ``glb,mp4`` (the CLI's default
outputs at --views/--resolution, meshes at the model's default grid or --mc-resolution), where the
per-image mesh and video dominate. Prints a markdown table; absolute numbers depend on the machine's
load (printed), compare the ratios within one run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import torch

import lrm_fast
from lrm_fast.batch import reconstruct_many

SAMPLE = os.path.join(os.path.dirname(lrm_fast.__file__), "assets", "sample.png")


def _load() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average n/a"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="demo,base", help="demo = the shipped model; others: random weights")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--outputs", default="triplane;glb,mp4", help="';'-separated format lists")
    ap.add_argument("--views", type=int, default=24)
    ap.add_argument("--resolution", type=int, default=96)
    ap.add_argument("--mc-resolution", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus; {_load()} at start")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = []
        for k in range(args.images):
            p = os.path.join(tmp, "in", f"img{k:02d}.png")
            os.makedirs(os.path.dirname(p), exist_ok=True)
            shutil.copy(SAMPLE, p)
            inputs.append(p)
        for preset in args.presets.split(","):
            model = lrm_fast.load_model(lrm_fast.api.DEFAULT_MODEL if preset == "demo" else preset, device="cpu")
            for fmts in args.outputs.split(";"):
                formats = tuple(fmts.split(","))
                opts = dict(formats=formats, n_views=args.views, resolution=args.resolution,
                            mc_resolution=args.mc_resolution, workers=args.workers, verbose=False)
                reconstruct_many(model, inputs[:1], os.path.join(tmp, "warm"), overwrite=True, **opts)
                rates = {b: [] for b in batches}
                for r in range(args.rounds):
                    for b in batches:
                        out = os.path.join(tmp, f"out-{preset}-{b}-{r}-{len(rows)}")
                        s = reconstruct_many(model, inputs, out, batch_size=b, **opts)
                        assert len(s.done) == len(inputs), s.line()
                        rates[b].append(s.images_per_s)
                        shutil.rmtree(out)
                best = {b: max(v) for b, v in rates.items()}
                rows.append((preset, fmts, best))
                print(f"{preset:5s} {fmts:10s} " + "  ".join(f"batch {b}: {best[b]:.3f} img/s" for b in batches)
                      + f"  ({_load()})", flush=True)
            del model
    print(f"\n{_load()} at end\n")
    hdr = " | ".join(f"batch {b} (images/s)" for b in batches)
    print(f"| model | outputs | {hdr} | batch {batches[-1]} / batch {batches[0]} |")
    print("|---|---|" + "---:|" * (len(batches) + 1))
    for preset, fmts, best in rows:
        print(f"| {preset} | {fmts} | " + " | ".join(f"{best[b]:.3f}" for b in batches)
              + f" | {best[batches[-1]] / best[batches[0]]:.2f}x |")


if __name__ == "__main__":
    main()
