"""``lrm-fast info [PATH]``: versions, devices, which path each op takes and why, preset sizes; with
PATH, what that checkpoint is and how it loads (format, OpenLRM's unstored input size, config)."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("path", nargs="?", help="a checkpoint folder or file: show its format, the choices its files "
                                            "do not settle (OpenLRM's input size) and its config, and nothing else")
    p.add_argument("--image-size", type=int, default=None, help="with PATH: the encoder input size to assume")
    p.add_argument("--preset", action="append", help="only these presets (repeatable); default all")
    p.add_argument("--device", default=None, help="explain kernel paths for this device (default: cpu and cuda if present)")


def run(args) -> int:
    from ..info import checkpoint_text, info_text

    if args.path:
        print(checkpoint_text(args.path, args.image_size))
        return 0
    print(info_text(presets=args.preset, device=args.device))
    return 0
