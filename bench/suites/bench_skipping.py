"""Empty-space skipping: the exact render vs the skipping render (occupancy grid, packed samples),
same field, same cameras, in one run.

Fields: the fitted base-size field (``bench/lib/fitted_field.py``: a trained-like field with empty
space and a surface) and the shipped demo model on the shipped sample. Cases: one view (the grid
built inside the timed call: what one render of a fresh reconstruction costs) and a turntable
(grid built once). ``exact`` is recorded as the reference of each pair, ``skip`` as the fast path.
Sizes: smoke 16x16 (2 views), full 288x288 (one view) and 12 views at 256x256. Accuracy (PSNR
against the exact render) and samples per ray: ``python -m bench.lib.skipping``.

Run: ``LRM_FAST_BENCH=full .venv/bin/python -m pytest bench/suites/bench_skipping.py -p no:cacheprovider``.
"""
import pytest
import torch

from bench.suites.conftest import record, sizes
from bench.lib.skipping import demo, fitted

VIEW = sizes(smoke=[16], full=[288], gpu=[512])
TURNTABLE = sizes(smoke=[(2, 16)], full=[(12, 256)], gpu=[(36, 256)])
FIELDS = {"fitted": fitted, "demo": demo}


@pytest.fixture(scope="module", params=list(FIELDS))
def rec(request):
    got = FIELDS[request.param]()
    if got is None:
        pytest.skip("bench/lib/fitted_field.py not present")
    return request.param, got[1]


@pytest.mark.parametrize("res", VIEW)
@pytest.mark.parametrize("mode", ["exact", "skip"])
def test_view(benchmark, rec, res, mode):
    name, r = rec

    def fn():
        r._grids.clear()
        return r.render(azimuths=[30.0], elevations=15, resolution=res, exact=mode == "exact")

    record(benchmark, "skip_view", f"{res}x{res}-{name}", mode, mode == "skip", note="grid built in the call")
    benchmark(fn)


@pytest.mark.parametrize("views_res", TURNTABLE, ids=lambda v: f"{v[0]}x{v[1]}")
@pytest.mark.parametrize("mode", ["exact", "skip"])
def test_turntable(benchmark, rec, views_res, mode):
    name, r = rec
    n, res = views_res

    def fn():
        r._grids.clear()
        return r.turntable(n_views=n, resolution=res, exact=mode == "exact")

    record(benchmark, "skip_turntable", f"{n}x{res}x{res}-{name}", mode, mode == "skip", note="grid built once")
    benchmark(fn)
