"""``lrm-fast reconstruct``: image(s) -> novel views + turntable video (+ mesh when available)."""
from __future__ import annotations

import os
import sys
import time

DEFAULT_IMAGE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "sample.png")


def add_arguments(p):
    p.add_argument("images", nargs="*", help=f"input image files (default: the shipped sample {DEFAULT_IMAGE})")
    p.add_argument("--model", default="tiny", help="checkpoint folder or preset name (default: tiny)")
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--formats", default="png,mp4", help="comma list of png, mp4, gif (default png,mp4)")
    p.add_argument("--views", type=int, default=24, help="turntable views (default 24)")
    p.add_argument("--resolution", type=int, default=96, help="render resolution (default 96)")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto", help="reference | fast | auto")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from ..api import load_model, reconstruct

    images = args.images or [DEFAULT_IMAGE]
    t0 = time.perf_counter()
    model = load_model(args.model, device=args.device, backend=args.backend, seed=args.seed)
    if getattr(model, "untrained", False):
        print(f"WARNING: preset {args.model!r} has RANDOM, UNTRAINED weights (seed {args.seed}); the "
              "output shows the pipeline works, not a real reconstruction.", file=sys.stderr)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    written = []
    for i, path in enumerate(images):
        rec = reconstruct(model, path)
        out_dir = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0])
        written += rec.save(out_dir, formats=formats, n_views=args.views, resolution=args.resolution)
    print(f"wrote {len(written)} files under {args.out} in {time.perf_counter() - t0:.1f} s")
    for w in written:
        if not w.endswith(".png"):
            print("  " + w)
    return 0
