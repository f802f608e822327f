"""``lrm-fast reconstruct``: image(s) -> colored mesh (glb/obj/ply), turntable video, views."""
from __future__ import annotations

import argparse

import os
import sys
import time

DEFAULT_IMAGE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "sample.png")


def add_arguments(p):
    from ..api import DEFAULT_MODEL
    from ..io.export import formats_help

    p.description = ("Reconstruct objects from single photos. For each IMAGE writes, under OUT/<image name>/, "
                     "a colored mesh and a turntable video (and optionally frames and the triplane). "
                     "The object is recentered from its alpha: the alpha of a PNG with a transparent "
                     "background, or, for an opaque photo, the background cut out by --remove-bg (default auto: "
                     "rembg when installed with its model file on disk, else the built-in method; nothing is "
                     "downloaded). With no IMAGE, the shipped sample is used. "
                     "A FOLDER means every png/jpg/jpeg/webp in it (sorted), a LIST.txt one path per line "
                     "(relative to the list; # comments). Inputs whose outputs are already complete are "
                     "skipped (resumable after a kill; --overwrite redoes them); a bad file is reported in one "
                     "line and the run goes on; the exit code is 1 when any input failed (2 for a usage "
                     "error, or when the only input is a bad image). Under torchrun, rank r of W takes "
                     "every W-th image on cuda:LOCAL_RANK.")
    p.add_argument("images", nargs="*", metavar="IMAGE|FOLDER|LIST.txt",
                   help="input image files (png/jpg/webp/...), folders of images, or .txt lists of image "
                        "paths; default: the shipped sample image")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"preset name (tiny, small, base, large, paper, triposr: random weights) or a checkpoint "
                        f"folder/file (ours, OpenLRM v1.0/v1.1, TripoSR); default: {DEFAULT_MODEL}")
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--formats", default="glb,mp4",
                   help=f"comma list of {formats_help()} (triplane: for `lrm-fast render`); default glb,mp4")
    p.add_argument("--mc-resolution", type=int, default=None,
                   help="marching-cubes grid points per axis (default: the model's, e.g. 384 OpenLRM, 256 TripoSR, 32 tiny)")
    p.add_argument("--mc-threshold", type=float, default=None,
                   help="density level of the surface (default: the model's, 3.0 OpenLRM, 25.0 TripoSR)")
    p.add_argument("--mc-coarse-to-fine", action=argparse.BooleanOptionalAction, default=True,
                   help="query the density grid coarse-to-fine (default): the same mesh as the dense grid (only "
                        "cells whose proven density bound contains the level are refined); "
                        "--no-mc-coarse-to-fine queries every grid point")
    p.add_argument("--watertight", action="store_true",
                   help="close the mesh with the box's faces where the object reaches the box, so it has no open "
                        "boundary (for 3D printing and volume)")
    p.add_argument("--texture", action="store_true",
                   help="UV-unwrap the mesh (xatlas) and bake the field's colours into a PNG texture: glb embeds "
                        "it, obj writes .mtl + _texture.png beside it (instead of vertex colours)")
    p.add_argument("--texture-size", type=int, default=None,
                   help="texture width = height in texels, a power of two >= 16 (default 1024; needs --texture)")
    p.add_argument("--faces", type=int, default=None,
                   help="decimate the mesh to at most N faces before colouring/unwrapping (fast-simplification); "
                        "unwrapping a full marching-cubes mesh takes long, e.g. --faces 20000")
    p.add_argument("--remove-bg", default="auto", choices=("auto", "rembg", "builtin", "none"),
                   help="cut the background out of opaque photos first: auto (default: rembg when it is installed "
                        "and its model file u2net.onnx is in $U2NET_HOME or ~/.u2net, else builtin), rembg, "
                        "builtin (a classical cut-out from the colours along the image border; no model file), "
                        "none (use the photo as is). An image with a real alpha channel is always used as is")
    p.add_argument("--preprocess", default="auto", choices=("auto", "default", "triposr", "openlrm"),
                   help="how a file becomes the encoder input: auto (default: the model family's own), default "
                        "(this project's: recenter from the alpha, composite, pad to a square), triposr (TripoSR's "
                        "run.py: resize_foreground 0.85 on alpha > 0, gray 0.5, bilinear), openlrm (OpenLRM's "
                        "inferrer: white, bicubic, no recentering)")
    p.add_argument("--views", type=int, default=24, help="turntable frames (default 24)")
    p.add_argument("--resolution", type=int, default=96, help="render resolution in pixels (default 96)")
    p.add_argument("--elevation", type=float, default=15.0, help="turntable elevation in degrees (default 15)")
    p.add_argument("--device", default="auto", help="auto (GPU if visible), cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPU; fp32 on CPU, or int8 where "
                   "`lrm-fast info` says it pays), int8 (CPU), fp32, bf16, fp16")
    p.add_argument("--backend", default="auto", help="auto | fast | reference (see `lrm-fast info`)")
    p.add_argument("--exact", action="store_true",
                   help="render every sample (no empty-space skipping; bit for bit the renderer without a grid)")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="the working memory a render or mesh may hold at once, e.g. 4GB, 512MiB or bytes (default: 75%% of what "
                        "the device has free now; `lrm-fast info` shows it): sizes the ray, field-query and mesh-slab "
                        "chunks; outputs do not depend on it")
    p.add_argument("--seed", type=int, default=0, help="seed of a preset's random weights")
    p.add_argument("--batch-size", type=int, default=1,
                   help="images per encoder/decoder call (default 1; meshes and videos are made per image)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes decoding and preprocessing images while the model runs (default 2; 0: "
                        "in this process)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo inputs whose outputs are already complete (default: skip them)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no per-image lines")


def run(args) -> int:
    import torch

    from ..api import check_max_memory, load_model
    from ..batch import list_inputs, reconstruct_many
    from ..dist import dist_info, resolve_device
    from ..io.export import check_formats, textured, untextured
    from ..texture import check_texture_args

    sources = args.images or [DEFAULT_IMAGE]
    try:
        formats = check_formats(args.formats)
    except ValueError as e:
        raise ValueError(f"--formats: {e}") from None
    if args.texture_size is not None and not args.texture:
        raise ValueError("--texture-size needs --texture")
    texture_size = 1024 if args.texture_size is None else args.texture_size
    check_texture_args(texture_size, args.faces)  # fail before loading a model
    if args.texture and untextured(formats):
        raise ValueError(f"--texture cannot write {', '.join(untextured(formats))} (no texture there); use "
                         f"--formats {' or '.join(textured())}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_max_memory(args.max_memory, "--max-memory")  # fail before loading a model
    if args.remove_bg == "rembg":
        from ..io.background import rembg_status

        why = rembg_status()
        if why:  # fail before loading a model
            raise RuntimeError(f"--remove-bg rembg: {why}")
    paths = list_inputs(sources)  # fail before loading a model: missing source, empty folder, empty list
    # one image named on the command line: its error is the command's error (exit 2), as before
    single = len(sources) == 1 and len(paths) == 1 and not os.path.isdir(sources[0]) \
        and not sources[0].lower().endswith(".txt")
    rank, world, local_rank = dist_info()
    device = resolve_device(args.device, local_rank, torch.cuda.is_available())
    if device.type == "cuda" and torch.cuda.is_available():  # else load_model says no GPU is visible
        torch.cuda.set_device(device)
    t0 = time.perf_counter()
    model = load_model(args.model, device=device, dtype=args.dtype, backend=args.backend, seed=args.seed)
    name = args.model
    model.cfg.render.skip_empty = model.cfg.render.skip_empty and not args.exact
    if getattr(model, "untrained", False):
        name = f"{args.model} (random weights, seed {args.seed})"
        if rank == 0:
            print(f"WARNING: preset {args.model!r} has RANDOM, UNTRAINED weights (seed {args.seed}); the "
                  "output shows the pipeline works, not a real reconstruction.", file=sys.stderr)
    progress = not args.quiet and sys.stderr.isatty()
    summary = reconstruct_many(
        model, paths, args.out, formats, batch_size=args.batch_size, workers=args.workers,
        overwrite=args.overwrite, n_views=args.views, resolution=args.resolution, elevation=args.elevation,
        mc_resolution=args.mc_resolution, threshold=args.mc_threshold, coarse_to_fine=args.mc_coarse_to_fine,
        watertight=args.watertight, max_memory=args.max_memory,
        texture=args.texture, texture_size=texture_size, faces=args.faces, remove_background=args.remove_bg,
        preprocess=True if args.preprocess == "auto" else args.preprocess,
        model_name=name, stop_on_error=single, verbose=not args.quiet, progress=progress)
    print(f"{summary.line()}; outputs under {args.out} ({time.perf_counter() - t0:.1f} s with the model load)"
          + ("; the FAILED lines above say why" if summary.failed else ""))
    return 0 if summary.ok else 1
