"""``lrm-fast make-data``: generate the synthetic multi-view dataset (OpenLRM layout)."""
from __future__ import annotations

import os


def add_arguments(p):
    p.add_argument("out", help="dataset root folder (one sub-folder per object + meta.json)")
    p.add_argument("--objects", type=int, default=1000, help="number of objects (default 1000)")
    p.add_argument("--views", type=int, default=32, help="views per object (default 32)")
    p.add_argument("--resolution", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed; object i of seed s is always the same")
    p.add_argument("--start", type=int, default=0, help="first object index (to extend a dataset)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    p.add_argument("--focal", type=float, default=0.75, help="normalized focal length (default 0.75, OpenLRM)")
    p.add_argument("--recipe", default="default", choices=("default", "demo", "rich"),
                   help="object/camera distribution: default (1-4 primitives, all views at distance 2), demo "
                        "(1-3 primitives in a 0.8 ball; views 0-3 at distance 2, view 0 the canonical source "
                        "camera; other views at 1.9-2.6, elevations -20..55) or rich (1-5 parts of different "
                        "colours, thin rods/plates/rings, scaled 0.8-1.5x and off-centre; source views as demo, "
                        "other views at 1.8-3.2, elevations -20..60; docs/demo/recipe.md)")
    p.add_argument("--no-depth", action="store_true", help="do not write depth maps (smaller, faster)")


def run(args) -> int:
    from ..data.synthetic import make_dataset

    s = make_dataset(args.out, args.objects, args.views, args.resolution, args.seed, args.workers,
                     args.focal, start=args.start, progress=True, recipe=args.recipe, depth=not args.no_depth)
    print(f"wrote {s['objects']} objects x {s['views']} views at {s['resolution']}px to {s['root']} in "
          f"{s['seconds']:.1f} s ({s['objects_per_s']:.2f} objects/s, {args.workers} workers)")
    return 0
