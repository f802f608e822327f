"""``lrm-fast convert``: OpenLRM (v1.0 / v1.1) or TripoSR checkpoint -> ours (safetensors + config.json)."""
from __future__ import annotations


def add_arguments(p):
    p.description = ("Convert a downloaded checkpoint to lrm_fast's format (a folder with model.safetensors + "
                     "config.json) that `--model DST` then loads fast. SRC: an OpenLRM v1.1 folder (config.json + "
                     "model.safetensors), an OpenLRM v1.0 model.pth, a TripoSR folder (config.yaml + model.ckpt) "
                     "or one of ours; the format is detected from the weights' names. Nothing is downloaded.")
    p.add_argument("src", metavar="SRC", help="checkpoint folder or file")
    p.add_argument("dst", metavar="DST", help="output folder")
    p.add_argument("--dtype", default=None, help="store weights as fp16/bf16/fp32 (default: as loaded, fp32)")
    p.add_argument("--image-size", type=int, default=None,
                   help="encoder input size for OpenLRM checkpoints (default 224/336/448 for small/base/large)")


def run(args) -> int:
    from ..api import _DTYPES
    from ..io.checkpoint import convert_checkpoint

    dtype = None
    if args.dtype:
        if args.dtype not in _DTYPES:
            raise ValueError(f"unknown --dtype {args.dtype!r} ({', '.join(sorted(_DTYPES))})")
        dtype = _DTYPES[args.dtype]
    fmt = convert_checkpoint(args.src, args.dst, dtype=dtype, image_size=args.image_size)
    print(f"converted {fmt} checkpoint {args.src} -> {args.dst} (model.safetensors + config.json)")
    return 0
