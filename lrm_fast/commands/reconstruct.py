"""``lrm-fast reconstruct``: image(s) -> colored mesh (glb/obj/ply), turntable video, views."""
from __future__ import annotations

import argparse

import os
import sys
import time

DEFAULT_IMAGE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "sample.png")


def add_arguments(p):
    from ..api import DEFAULT_MODEL

    p.description = ("Reconstruct objects from single photos. For each IMAGE writes, under OUT/<image name>/, "
                     "a colored mesh and a turntable video (and optionally frames and the triplane). "
                     "Photos with a transparent background (RGBA PNG) work best: the object is recentered "
                     "from its alpha; an opaque photo is used as is. With no IMAGE, the shipped sample is used.")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="input image files (png/jpg/webp/...); default: the shipped sample image")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"preset name (tiny, small, base, large, paper, triposr: random weights) or a checkpoint "
                        f"folder/file (ours, OpenLRM v1.0/v1.1, TripoSR); default: {DEFAULT_MODEL}")
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--formats", default="glb,mp4",
                   help="comma list of glb, obj, ply (mesh), mp4, gif (video), png (frames), triplane "
                        "(for `lrm-fast render`); default glb,mp4")
    p.add_argument("--mc-resolution", type=int, default=None,
                   help="marching-cubes grid points per axis (default: the model's, e.g. 384 OpenLRM, 256 TripoSR, 32 tiny)")
    p.add_argument("--mc-threshold", type=float, default=None,
                   help="density level of the surface (default: the model's, 3.0 OpenLRM, 25.0 TripoSR)")
    p.add_argument("--mc-coarse-to-fine", action=argparse.BooleanOptionalAction, default=False,
                   help="query the density grid coarse-to-fine: the same mesh as the dense grid (only cells whose "
                        "proven density bound contains the level are refined); off by default: on this CPU the "
                        "bound still costs more than it saves on the demo model")
    p.add_argument("--views", type=int, default=24, help="turntable frames (default 24)")
    p.add_argument("--resolution", type=int, default=96, help="render resolution in pixels (default 96)")
    p.add_argument("--elevation", type=float, default=15.0, help="turntable elevation in degrees (default 15)")
    p.add_argument("--device", default="auto", help="auto (GPU if visible), cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16")
    p.add_argument("--backend", default="auto", help="auto | fast | reference (see `lrm-fast info`)")
    p.add_argument("--seed", type=int, default=0, help="seed of a preset's random weights")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from ..api import FORMATS, load_model, reconstruct

    images = args.images or [DEFAULT_IMAGE]
    formats = tuple(f.strip().lower() for f in args.formats.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS + ("triplane",)]
    if bad or not formats:
        raise ValueError(f"unknown --formats {bad or args.formats!r}; choose from {', '.join(FORMATS + ('triplane',))}")
    for path in images:  # fail before loading a model
        if not os.path.exists(path):
            raise FileNotFoundError(f"image file not found: {path}")
    t0 = time.perf_counter()
    model = load_model(args.model, device=args.device, dtype=args.dtype, backend=args.backend, seed=args.seed)
    if getattr(model, "untrained", False):
        print(f"WARNING: preset {args.model!r} has RANDOM, UNTRAINED weights (seed {args.seed}); the "
              "output shows the pipeline works, not a real reconstruction.", file=sys.stderr)
    progress = not args.quiet and sys.stderr.isatty()
    written = []
    for path in images:
        name = os.path.splitext(os.path.basename(path))[0]
        out_dir = os.path.join(args.out, name)
        rec = reconstruct(model, path)
        media = tuple(f for f in formats if f != "triplane")
        if media:
            written += rec.save(out_dir, formats=media, n_views=args.views, resolution=args.resolution,
                                mc_resolution=args.mc_resolution, threshold=args.mc_threshold, names=[name],
                                elevation=args.elevation, coarse_to_fine=args.mc_coarse_to_fine,
                                progress=progress)
        if "triplane" in formats:
            from ..io.export import save_triplane

            written.append(save_triplane(rec.triplane[0], os.path.join(out_dir, name + ".triplane.safetensors"),
                                         model=args.model))
    print(f"wrote {len(written)} files under {args.out} in {time.perf_counter() - t0:.1f} s")
    for w in written:
        if "_view" not in w:
            print("  " + w)
    return 0
