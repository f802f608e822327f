"""Photo -> GLB wall time and peak RSS of one process, dense grid vs coarse-to-fine (issue 16, item 3).

``--case fitted``: the base preset (random weights) reconstructs the sample photo (encoder + decoder:
the real cost of that stage), then the fitted-field fixture (bench/lib/fitted_field.py) stands in for a
trained base model's triplane and field: mesh at ``--resolution`` with its level 3.0, vertex colours,
GLB written. ``--case demo``: the shipped demo model, end to end on the sample. One process per
measurement (peak RSS is the process's high-water mark), e.g.

    python -m bench.scripts.photo_to_glb --case fitted --resolution 256 [--dense]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

import torch

import lrm_fast
from lrm_fast.io.export import save_mesh
from lrm_fast.mesh import extract_mesh

SAMPLE = os.path.join(os.path.dirname(lrm_fast.__file__), "assets", "sample.png")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=["fitted", "demo"], default="fitted")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--dense", action="store_true", help="query every grid point (coarse_to_fine=False)")
    args = ap.parse_args(argv)
    if args.case == "fitted":
        from bench.lib.fitted_field import load_fitted_field

        model = lrm_fast.load_model("base", device="cpu", dtype="float32")
        planes_f, fitted = load_fitted_field()
    else:
        model = lrm_fast.load_model(device="cpu", dtype="float32")
    t0 = time.perf_counter()
    rec = model.reconstruct(SAMPLE)
    t1 = time.perf_counter()
    if args.case == "fitted":
        mesh = extract_mesh(fitted, planes_f, resolution=args.resolution, coarse_to_fine=not args.dense)
    else:
        mesh = rec.mesh(resolution=args.resolution, coarse_to_fine=not args.dense)
    with tempfile.TemporaryDirectory() as d:
        save_mesh(mesh, os.path.join(d, "out.glb"))
    t2 = time.perf_counter()
    print(json.dumps({"case": args.case, "resolution": args.resolution, "dense": args.dense,
                      "reconstruct_s": round(t1 - t0, 2), "mesh_glb_s": round(t2 - t1, 2),
                      "total_s": round(t2 - t0, 2), "faces": int(len(mesh.faces)),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
