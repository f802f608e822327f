"""The tiled Triton compositing kernels (``kernels/composite.py``, backend ``"triton"`` of
``composite_samples`` and ``composite_samples_weights``) against their twins: outputs, weights and
the gradients of raw and background.

CPU: the kernels run under Triton's interpreter, which must be on (``TRITON_INTERPRET=1``) before
triton is imported; other test files may import triton first, so, as ``tests/test_triplane_mlp.py``
does, the whole grid runs once in a child (``python tests/test_composite_triton.py --worker``) and
each case here reads that child's verdict. GPU (``gpu`` marker): the same grid in-process on CUDA
(compiled kernels), plus a size with many programs.

Under the interpreter every launch also runs inside ``tests/bounds_check.py``'s
``checked_launches``: each masked-in load and store must lie inside one tensor argument.
Tolerances are the twin harness's (``tests/_twin.py`` ``TOL``): float64 to 1e-10, float32 to 2e-5.
Cases: S a power of two and not (padded tiles), S = 1 (no interval) and 2, ray counts that are not
a multiple of the block (a shrunk tile: several programs, a partial last one), no ray, rays outside the box, no
density anywhere, opaque rays (the 1e-20 floor stops them), early stop, both activations, midpoint
on and off, one background per ray, and the training path's shape (48 samples, jittered depths).
"""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _grid() -> list[dict]:
    cases = []
    for dtype in ("float64", "float32"):
        for mid, act in ((True, "softplus"), (False, "exp")):
            cases.append(dict(R=7, S=13, dtype=dtype, midpoint=mid, act=act, kind="plain"))
        # a small tile: several programs (5 forward, 9 backward), the last one partial
        cases.append(dict(R=9, S=20, dtype=dtype, midpoint=True, act="softplus", kind="plain", tile=64))
        cases.append(dict(R=5, S=8, dtype=dtype, midpoint=True, act="softplus", kind="early_stop"))
    for kind in ("gated", "zero", "huge", "exp_clamp"):
        cases.append(dict(R=6, S=9, dtype="float64", midpoint=True, act="exp" if kind == "exp_clamp" else "softplus",
                          kind=kind))
    cases += [dict(R=4, S=1, dtype="float64", midpoint=True, act="softplus", kind="plain"),
              dict(R=3, S=2, dtype="float32", midpoint=False, act="softplus", kind="plain"),
              dict(R=0, S=5, dtype="float32", midpoint=True, act="softplus", kind="plain"),
              dict(R=12, S=48, dtype="float32", midpoint=True, act="softplus", kind="train")]
    for c in cases:
        c["id"] = "{kind}-R{R}-S{S}-{dtype}-{m}-{act}".format(m="mid" if c["midpoint"] else "nomid", **c)
    return cases


def _inputs(case: dict, device: str):
    """raw, t, o, d, background (per ray) for a case, drawn in float64 then cast."""
    R, S, kind = case["R"], case["S"], case["kind"]
    g = torch.Generator().manual_seed(R * 1000 + S)
    f64 = torch.float64
    t = torch.sort(torch.rand(R, S, generator=g, dtype=f64) * 3 + 0.5, -1).values
    o = torch.tensor([0.0, 0.0, -2.5], dtype=f64).expand(R, 3).clone()
    d = torch.nn.functional.normalize(torch.randn(R, 3, generator=g, dtype=f64) * 0.3
                                      + torch.tensor([0.0, 0.0, 1.0], dtype=f64), dim=-1)
    raw = torch.randn(R, S, 4, generator=g, dtype=f64) * 3
    bg = torch.rand(R, 3, generator=g, dtype=f64)
    if kind == "gated":  # every other ray entirely outside the box
        o[::2] = torch.tensor([5.0, 5.0, 5.0], dtype=f64)
    elif kind == "zero":  # no density anywhere: T stays 1, depth = the last interval's
        raw[..., 0] = -1e4
    elif kind == "huge":  # opaque after a third of the ray: T falls under the 1e-20 floor
        raw[:, S // 3:, 0] = 1e4
    elif kind == "exp_clamp":  # logits above the exp activation's clamp
        raw[..., 0] *= 8
    elif kind == "early_stop":
        raw[..., 0] += 4.0
    elif kind == "train":  # the training step's layout: stratified + importance depths, merged
        t = torch.sort(torch.linspace(0.5, 3.5, S, dtype=f64).expand(R, S)
                       + torch.rand(R, S, generator=g, dtype=f64) * 0.05, -1).values
    dt = getattr(torch, case["dtype"])
    return [x.to(device, dt) for x in (raw, t, o, d, bg)]


def check_case(case: dict, device: str) -> None:
    """Raises AssertionError where the Triton kernels and the twins disagree."""
    import importlib

    from tests._twin import TOL, check_twin

    C = importlib.import_module("lrm_fast.ops.composite")  # (the package exports the function of that name)
    composite_samples, composite_samples_weights = C.composite_samples, C.composite_samples_weights
    C.TRITON_TILE = case.get("tile", 1024)
    raw, t, o, d, bg = _inputs(case, device)
    kw = dict(midpoint=case["midpoint"], density_activation=case["act"],
              early_stop=0.05 if case["kind"] == "early_stop" else 0.0)
    wrt = (0, 4) if case["S"] >= 2 and case["R"] else ()  # (no interval: the outputs do not depend on raw)
    check_twin(lambda *a: composite_samples(*a, backend="triton", **kw),
               lambda *a: composite_samples(*a, backend="reference", **kw), (raw, t, o, d, bg), wrt=wrt, tol=TOL,
               names=("color", "depth", "opacity", "v_raw", "v_bg"))
    if kw["early_stop"]:  # the case really stops rays early
        stopped = composite_samples(raw, t, o, d, bg, backend="reference", **kw)[2]
        assert (stopped < composite_samples(raw, t, o, d, bg, backend="reference", midpoint=kw["midpoint"],
                                            density_activation=kw["density_activation"])[2]).any()
    kw.pop("early_stop")
    check_twin(lambda *a: composite_samples_weights(*a, backend="triton", **kw),
               lambda *a: composite_samples_weights(*a, backend="reference", **kw), (raw, t, o, d), tol=TOL,
               names=("weights",))


def _worker():
    assert os.environ.get("TRITON_INTERPRET") == "1"
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from bounds_check import checked_launches

    torch.set_num_threads(1)
    for case in _grid():
        try:
            # every access of every launch inside its tensor argument (a GPU would fault later, unnamed)
            with checked_launches() as log:
                check_case(case, "cpu")
            assert log.launches or not case["R"], "no Triton launch ran"
            print("CASE " + json.dumps(dict(id=case["id"])), flush=True)
        except Exception as e:  # noqa: BLE001 - report per case, keep going
            print("CASE " + json.dumps(dict(id=case["id"], error=f"{type(e).__name__}: {e}")), flush=True)


@pytest.fixture(scope="module")
def interpreter_results():
    from tests._twin import interpreter_worker_results

    return interpreter_worker_results(__file__)


@pytest.mark.parametrize("case", _grid(), ids=lambda c: c["id"])
def test_interpreter_matches_twin(case, interpreter_results):
    results, stderr = interpreter_results
    assert case["id"] in results, f"worker produced no result for {case['id']}:\n{stderr}"
    assert "error" not in results[case["id"]], results[case["id"]]["error"]


@pytest.mark.gpu
@pytest.mark.parametrize("case", _grid() + [dict(R=4099, S=128, dtype="float32", midpoint=True, act="softplus",
                                                 kind="plain", id="big")], ids=lambda c: c["id"])
def test_cuda_matches_twin(case):
    pytest.importorskip("triton")
    check_case(case, "cuda")


def test_auto_never_picks_the_interpreter(monkeypatch):
    """On the CPU auto keeps the cpp kernel (or the twin): the interpreter is for tests only; and
    without TRITON_INTERPRET the named backend refuses CPU tensors with a one-line reason."""
    from lrm_fast.ops import _dispatch

    t = torch.zeros(2, 3)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    for op in ("composite_samples", "composite_samples_weights"):
        assert _dispatch.resolve(op, "auto", t)[0] != "triton"
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        _dispatch.resolve("composite_samples", "triton", t)


if __name__ == "__main__" and "--worker" in sys.argv:
    sys.path.insert(0, ROOT)
    _worker()
