"""Empty-space skipping: accuracy against the exact render and speed, exact vs skipping, in ONE run.

    python -m bench.lib.skipping                          # the table of docs/readme/bench.md
    python -m bench.lib.skipping --taus 1e-4,1e-3,1e-2   # the accuracy rule at other budgets
    python -m bench.lib.skipping --quick                  # tiny sizes (seconds; what the tests run)

Fields: the shipped demo model on the shipped sample (a trained field), the fitted base-size field
(``bench/lib/fitted_field.py``, when present), and the parity checkpoints (``tests/parity/fixtures``:
small OpenLRM v1.1 / v1.0 models with random weights, rendered from their recorded input image;
TripoSR's too, through the uniform skipping marcher), and the fitted TripoSR field.

Per field: PSNR of the skipping render against the exact render (rgb in [0, 1]; several views),
the max abs difference, the samples per ray the field evaluated (skipping) vs the exact render's,
and the time of one view (grid build included) and of a turntable (grid built once) for both,
as ratios from this run. Timings: min over ``--repeat`` runs, torch threads as set.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.float() - b.float()).square().mean())
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def demo():
    import lrm_fast

    model = lrm_fast.load_model()
    return "demo model (sample.png)", model.reconstruct(os.path.join(ROOT, "lrm_fast", "assets", "sample.png"))


def fitted(preset: str = "base"):
    """The fitted field of ``preset`` (bench/lib/fitted_field.py), or None where it is not there."""
    try:
        from bench.lib.fitted_field import load_fitted_field
    except ImportError:
        return None
    from lrm_fast.api import Reconstruction

    planes, model = load_fitted_field(preset=preset)
    model.render = lambda p, c2w, K, h, w=None, **kw: model.renderer(p, c2w, K, h, w, **kw)  # what Reconstruction calls
    return f"fitted {preset} field", Reconstruction(model, planes)


def parity(version: str):
    import numpy as np

    import lrm_fast

    folder = os.path.join(ROOT, "tests", "parity", "fixtures", version)
    model = lrm_fast.load_model(folder, device="cpu", dtype="float32")
    stages = np.load(os.path.join(folder, "stages.npz"))
    if "image_u8" in stages:
        img = torch.from_numpy(stages["image_u8"]).float() / 255.0
    else:
        img = torch.from_numpy(stages["image"]).float()
    from lrm_fast.api import Reconstruction

    with torch.inference_mode():
        planes = model.forward_planes(img)
    return f"parity {version} (random weights)", Reconstruction(model, planes)


def _timed(fn, repeat: int) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def measure(name, rec, res: int, tt_res: int, tt_views: int, taus, repeat: int, time_it: bool) -> list[dict]:
    cfg = rec.model.cfg.render
    r = rec.model.renderer
    az = [0.0, 70.0, 160.0, 250.0]
    exact = rec.render(azimuths=az, elevations=15, resolution=res, exact=True)["rgb"]
    rows = []
    saved = cfg.occupancy_tau
    try:
        for tau in taus:
            cfg.occupancy_tau = tau
            r.skip_stats = {}
            skip = rec.render(azimuths=az, elevations=15, resolution=res, exact=False)["rgb"]
            st = r.skip_stats
            r.skip_stats = None
            row = dict(field=name, tau=tau, psnr=psnr(skip, exact), maxdiff=float((skip - exact).abs().max()),
                       occupied=r.occupied_fraction(rec.occupancy()),
                       spr_exact=st.get("dense", 0) / max(st.get("rays", 1), 1),
                       spr_skip=st.get("evaluated", 0) / max(st.get("rays", 1), 1),
                       skips=bool(st))
            rows.append(row)
    finally:
        cfg.occupancy_tau = saved
    if time_it:
        cfg.occupancy_tau = taus[0] if len(taus) == 1 else saved
        try:
            def one_view(exact_):
                def fn():
                    rec._grids.clear()
                    return rec.render(azimuths=[30.0], elevations=15, resolution=res, exact=exact_)
                return fn

            def turntable(exact_):
                def fn():
                    rec._grids.clear()
                    return rec.turntable(n_views=tt_views, resolution=tt_res, exact=exact_)
                return fn

            te, _ = _timed(one_view(True), repeat)
            ts, _ = _timed(one_view(False), repeat)
            tte, _ = _timed(turntable(True), repeat)
            tts, _ = _timed(turntable(False), repeat)
            tg, _ = _timed(lambda: (rec._grids.clear(), rec.occupancy()), repeat)
        finally:
            cfg.occupancy_tau = saved
        for row in rows:
            if row["tau"] == cfg.occupancy_tau or len(rows) == 1:
                row.update(view_exact=te, view_skip=ts, tt_exact=tte, tt_skip=tts, grid=tg)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--taus", default=None, help="comma list of occupancy_tau values (default: the config's)")
    ap.add_argument("--res", type=int, default=288)
    ap.add_argument("--tt-res", type=int, default=256)
    ap.add_argument("--tt-views", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-time", action="store_true", help="accuracy only")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.quick:
        a.res, a.tt_res, a.tt_views, a.repeat = 24, 16, 2, 1
    sources = [demo, fitted, lambda: fitted("triposr"), lambda: parity("openlrm-v1.1"),
               lambda: parity("openlrm-v1.0"), lambda: parity("triposr")]
    print(f"# empty-space skipping, torch threads {a.threads}, load average {os.getloadavg()[0]:.1f}, "
          f"view {a.res}x{a.res}, turntable {a.tt_views} x {a.tt_res}x{a.tt_res}")
    print("| field | tau | occupied cells | samples/ray exact -> skip | PSNR vs exact | max abs diff |"
          " one view exact / skip | turntable exact / skip | grid |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with torch.inference_mode():
        for src in sources:
            got = src()
            if got is None:
                continue
            name, rec = got
            taus = [rec.model.cfg.render.occupancy_tau] if a.taus is None else [float(x) for x in a.taus.split(",")]
            for row in measure(name, rec, a.res, a.tt_res, a.tt_views, taus, a.repeat, not a.no_time):
                if not row["skips"]:
                    print(f"| {row['field']} | - | - | (renders exactly: no skipping on this renderer) | inf | 0 | | | |")
                    break
                timing = ""
                if "view_exact" in row:
                    timing = (f" {row['view_exact']:.2f} / {row['view_skip']:.2f} s = "
                              f"**{row['view_exact'] / row['view_skip']:.2f}x** |"
                              f" {row['tt_exact']:.1f} / {row['tt_skip']:.1f} s = "
                              f"**{row['tt_exact'] / row['tt_skip']:.2f}x** | {row['grid']:.2f} s |")
                else:
                    timing = " | | |"
                print(f"| {row['field']} | {row['tau']:g} | {100 * row['occupied']:.1f}% | "
                      f"{row['spr_exact']:.1f} -> {row['spr_skip']:.1f} | {row['psnr']:.1f} dB | "
                      f"{row['maxdiff']:.1e} |{timing}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
