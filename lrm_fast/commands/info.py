"""``lrm-fast info``: versions, devices, which path each op takes and why, preset sizes."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("--preset", action="append", help="only these presets (repeatable); default all")
    p.add_argument("--device", default=None, help="explain kernel paths for this device (default: cpu and cuda if present)")


def run(args) -> int:
    from ..info import info_text

    print(info_text(presets=args.preset, device=args.device))
    return 0
