"""Time and peak memory of big meshes and a big view on the fitted base field, per memory budget
(real-photos issue, items 3 and 4: a 1024^2 view plus a 1024^3 mesh under 4 GB peak on CPU).

    python -m bench.scripts.mesh_memory [--mesh 512,1024] [--view 1024] [--budgets default,4GB] [--out FILE]

Each case runs in a fresh process (``--child``), so its peak is its own: the process's RSS high-water
mark (``VmHWM``: libraries, the field and the planes included, as a user sees it) and the part the case
added over the process before it (``extra``). Mesh: ``extract_mesh`` of the fitted field
(``bench/lib/fitted_field.py``) at its threshold, coarse-to-fine, ``max_memory`` = the budget. View:
one ``R^2`` view (azimuth 30, elevation 20, distance 2) through the renderer with the field's occupancy
grid (as reconstructions render), ``model.renderer.max_memory`` = the budget. ``default`` is
``max_memory=None`` (75% of the free memory, ``lrm_fast.memory``). The load average is printed: times
taken under load are not speed claims, peaks do not depend on it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(field + ":"))


def _child(kind: str, res: int, budget: str) -> dict:
    import torch

    from bench.lib.fitted_field import load_fitted_field
    from lrm_fast.api import renderer_budget
    from lrm_fast.mesh import extract_mesh

    max_memory = None if budget == "default" else budget
    planes, model = load_fitted_field()
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    with torch.inference_mode():
        if kind == "mesh":
            mesh = extract_mesh(model, planes, resolution=res, max_memory=max_memory)
            facts = {"faces": int(len(mesh.faces))}
        else:
            from lrm_fast.field.occupancy import proven_occupancy
            from lrm_fast.model.camera import default_intrinsics, orbit_cameras

            rc = model.cfg.render
            grid = proven_occupancy(model.field, planes, rc.occupancy_resolution, rc.box_min, rc.box_max,
                                    rc.occupancy_tau, max_memory=max_memory)
            with renderer_budget(model, max_memory):
                out = model.renderer(planes, orbit_cameras([30.0], [20.0], 2.0)[None],
                                     default_intrinsics(0.75).expand(1, 1, 4), res, background=1.0, occupancy=grid)
            facts = {"mean_opacity": round(float(out["opacity"].mean()), 4)}
    seconds = time.perf_counter() - t0
    return {"case": f"{kind} {res}", "budget": budget, "seconds": round(seconds, 2),
            "peak_rss_mib": round(_status_kb("VmHWM") / 1024), "extra_mib": round((_status_kb("VmHWM") - before) / 1024),
            **facts}


def run_case(kind: str, res: int, budget: str, timeout: float = 3600) -> dict:
    """One case in a fresh process (its peak RSS is its own); the child's JSON line as a dict."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-m", "bench.scripts.mesh_memory", "--child", kind, str(res), budget],
                         capture_output=True, text=True, cwd=root, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} {res} under {budget} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| case | budget | time | peak RSS | extra over the loaded field | result |",
             "|---|---|---:|---:|---:|---|"]
    for r in rows:
        result = f"{r['faces']:,} faces" if "faces" in r else f"mean opacity {r['mean_opacity']}"
        lines.append(f"| {r['case']} | {r['budget']} | {r['seconds']:.1f} s | {r['peak_rss_mib']:,} MiB "
                     f"| {r['extra_mib']:,} MiB | {result} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mesh", default="512,1024", help="comma list of mesh resolutions (empty: none)")
    p.add_argument("--view", default="1024", help="comma list of view resolutions (empty: none)")
    p.add_argument("--budgets", default="default,4GB", help="comma list of max_memory values; default = None")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.add_argument("--child", nargs=3, metavar=("KIND", "RES", "BUDGET"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kind, res, budget = args.child
        print(json.dumps(_child(kind, int(res), budget)))
        return 0
    cases = [("mesh", int(r)) for r in args.mesh.split(",") if r.strip()] + \
            [("view", int(r)) for r in args.view.split(",") if r.strip()]
    rows = []
    for budget in [b.strip() for b in args.budgets.split(",") if b.strip()]:
        for kind, res in cases:
            rows.append(run_case(kind, res, budget))
            print(json.dumps(rows[-1]), flush=True)
    text = f"load average {os.getloadavg()[0]:.1f} (1 min) at the end\n\n{table(rows)}"
    print(text)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
