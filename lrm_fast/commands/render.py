"""``lrm-fast render``: views of a saved triplane (``reconstruct --formats triplane``) at any cameras."""
from __future__ import annotations

import os


_KINDS = ("frames", "video")  # what a render writes (the registry's formats of these kinds)


def add_arguments(p):
    from ..io.export import formats_help

    p.description = ("Render new views of a reconstruction saved with `lrm-fast reconstruct --formats ...,triplane` "
                     "without re-running the image encoder. Cameras orbit the object: azimuth 0 is the input view.")
    p.add_argument("triplane", metavar="TRIPLANE", help="a .triplane.safetensors file written by `reconstruct`")
    p.add_argument("--model", default=None,
                   help="the model it was made with (default: the one recorded in the file)")
    p.add_argument("--out", default="renders", help="output folder (default: renders)")
    p.add_argument("--azimuths", default=None,
                   help="comma list of azimuths in degrees (default: --views evenly spaced)")
    p.add_argument("--views", type=int, default=24, help="number of turntable views when --azimuths is not given")
    p.add_argument("--elevation", type=float, default=15.0, help="degrees above the horizon (default 15)")
    p.add_argument("--distance", type=float, default=None, help="camera distance (default: the model's source camera)")
    p.add_argument("--resolution", type=int, default=128, help="pixels (default 128)")
    p.add_argument("--formats", default="png,mp4", help=f"comma list of {formats_help(_KINDS)} (default png,mp4)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto, int8 (CPU), fp32, bf16, fp16 (as reconstruct)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--exact", action="store_true",
                   help="render every sample (no empty-space skipping; bit for bit the renderer without a grid)")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="the working memory a render or mesh may hold at once, e.g. 4GB, 512MiB or bytes (default: 75%% of what "
                        "the device has free now; `lrm-fast info` shows it): sizes the ray, field-query and mesh-slab "
                        "chunks; outputs do not depend on it")
    p.add_argument("--seed", type=int, default=0, help="seed of a preset's random weights (must match reconstruct's)")


def run(args) -> int:
    import numpy as np

    from ..api import Reconstruction, check_max_memory, load_model
    from ..io.export import check_formats, load_triplane, write_kind

    try:
        formats = check_formats(args.formats, kinds=_KINDS)
    except ValueError as e:
        raise ValueError(f"--formats: {e}") from None
    check_max_memory(args.max_memory, "--max-memory")
    planes, meta = load_triplane(args.triplane)
    model_name = args.model or meta.get("model")
    if not model_name:
        raise ValueError(f"{args.triplane}: no model recorded in the file; pass --model")
    model = load_model(model_name, device=args.device, dtype=args.dtype, backend=args.backend, seed=args.seed)
    model.cfg.render.skip_empty = model.cfg.render.skip_empty and not args.exact
    want = (3, model.cfg.triplane.channels, model.cfg.triplane.high_res, model.cfg.triplane.high_res)
    if tuple(planes.shape) != want:
        raise ValueError(f"{args.triplane}: triplane {tuple(planes.shape)} does not fit model {model_name!r} {want}")
    p = next(model.parameters())
    rec = Reconstruction(model, planes[None].to(p.device, p.dtype))
    if args.azimuths:
        try:
            az = [float(a) for a in args.azimuths.split(",") if a.strip()]
        except ValueError:
            raise ValueError(f"--azimuths must be comma-separated numbers, got {args.azimuths!r}") from None
    else:
        az = list(np.linspace(0, 360, args.views, endpoint=False))
    rgb = rec.render(azimuths=az, elevations=args.elevation, distance=args.distance,
                     resolution=args.resolution, max_memory=args.max_memory)["rgb"][0]
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, os.path.basename(args.triplane).split(".")[0])
    written = [p for kind in _KINDS for p in write_kind(formats, kind, rgb, stem)]
    print(f"wrote {len(written)} files under {args.out}")
    return 0
