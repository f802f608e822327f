"""The twin-test harness and the comparison helpers the twin and parity tests share. Import as
``from tests._twin import ...`` (the suite runs from the repository root, as ``bench/`` imports
``bench.suites.conftest``).

The harness (docs/architecture.md section 5) compares a fast implementation with its twin on
the same inputs, forward and backward:

    check_twin(lambda *a: op(*a, backend="cpp"), lambda *a: op(*a, backend="reference"),
               inputs, wrt=(0, 4), tol=TOL)

runs both on fresh leaf copies of ``inputs[i]`` for ``i in wrt``, draws one seeded random
cotangent per floating output (the same for both), and asserts every output and every gradient
close under the tolerance rule for the inputs' dtype (``TOL``, or the test's own per-dtype rule;
integer and bool outputs must be equal). ``check_low_precision`` is the fp16/bf16 rule: the fast
op's error against an fp32 twin at most twice the twin's own error in that precision.
``DEVICES`` parametrizes a test over CPU and CUDA (the CUDA case carries the ``gpu`` mark, so it
skips without a GPU): one test for both devices.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Callable, Sequence

import pytest
import torch

from lrm_fast.mesh import density_grid


def maxdiff(a, b) -> float:
    """max |a - b| in float32 (0 for empty tensors); the shapes must match."""
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return (a - b).abs().max().item() if a.numel() else 0.0


def maxrel(a, b, floor: float = 1e-6) -> float:
    """max |a - b| / max(|b|, floor) in float64; the shapes must match."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return ((a - b).abs() / b.abs().clamp_min(floor)).max().item() if a.numel() else 0.0


def assert_close(got, want, name: str, **tol) -> None:
    """``torch.testing.assert_close`` in float64 with a message that names the tensor."""
    torch.testing.assert_close(torch.as_tensor(got).double(), torch.as_tensor(want).double(), **tol,
                               msg=lambda m: f"{name}: {m}")


# ---- the twin-test harness ------------------------------------------------------------------

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]

# The default rule per dtype for a fast op against its twin in the same dtype (a test may pass a
# tighter or an op-specific rule of its own); EXACT for ops that only move values.
TOL = {torch.float64: dict(atol=1e-10, rtol=1e-9), torch.float32: dict(atol=2e-5, rtol=1e-4)}
EXACT = dict(atol=0.0, rtol=0.0)


def _tol_for(tol, dtype) -> dict:
    """``tol`` is one rule (a dict with atol/rtol) or a rule per dtype; None: ``TOL``."""
    tol = TOL if tol is None else tol
    if "atol" in tol or "rtol" in tol:
        return dict(tol)
    if dtype not in tol:
        raise KeyError(f"no tolerance rule for {dtype} (rules for {sorted(map(str, tol))})")
    return dict(tol[dtype])


def cotangents(outs: Sequence, seed: int = 1) -> list:
    """One standard-normal cotangent per floating output that requires grad (None for the others),
    drawn from a CPU generator seeded with ``seed`` in output order (in the output's dtype for
    float32/float64; fp16/bf16 outputs get the float32 draw rounded, so a low-precision run sees
    the fp32 run's cotangents), then moved to its device: the same numbers for the fast op and its
    twin."""
    g = torch.Generator().manual_seed(seed)

    def draw(o):
        dt = o.dtype if o.dtype in (torch.float32, torch.float64) else torch.float32
        return torch.randn(o.shape, generator=g, dtype=dt).to(o.device, o.dtype)
    return [draw(o) if isinstance(o, torch.Tensor) and o.requires_grad else None for o in outs]


def fwd_bwd(fn: Callable, inputs: Sequence, wrt: Sequence[int] = (), seed: int = 1, cots: Sequence | None = None
            ) -> list:
    """``fn(*inputs)`` (a tensor or a tuple) on fresh leaf copies of ``inputs[i]`` for ``i in wrt``,
    then the vector-Jacobian product with random cotangents ``v_j`` (``cotangents``; or the given
    ``cots``, one per output, None for none), i.e. the gradients of ``sum_j <out_j, v_j>`` with
    respect to those inputs. Returns the detached outputs followed by the gradients."""
    inputs = list(inputs)
    for i in wrt:
        inputs[i] = inputs[i].detach().clone().requires_grad_(True)
    outs = fn(*inputs)
    outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
    if not wrt:
        return [o.detach() if isinstance(o, torch.Tensor) else o for o in outs]
    pairs = [(o, v) for o, v in zip(outs, cotangents(outs, seed) if cots is None else cots) if v is not None]
    assert pairs, "no output requires grad: nothing to differentiate"
    # the cotangents go in as grad_outputs, as they are (an expanded one reaches the op's backward)
    grads = torch.autograd.grad([o for o, _ in pairs], [inputs[i] for i in wrt], [v for _, v in pairs],
                                allow_unused=True)
    return [o.detach() if isinstance(o, torch.Tensor) else o for o in outs] + list(grads)


def check_twin(fast: Callable, twin: Callable, inputs: Sequence, *, wrt: Sequence[int] = (), tol=None,
               names: Sequence[str] | None = None, seed: int = 1, cots: Sequence | None = None) -> list:
    """The fast op against its twin on the same inputs, forward and (with ``wrt``) backward with
    random cotangents (or ``cots``): every output and gradient close under ``tol`` (one rule, a
    rule per dtype picked by the first floating input, or a function of the twin's tensor that
    returns the rule; default ``TOL``), integer/bool outputs equal. ``names`` name the outputs
    then the gradients in failure messages. Returns the fast results."""
    got, want = fwd_bwd(fast, inputs, wrt, seed, cots), fwd_bwd(twin, inputs, wrt, seed, cots)
    assert len(got) == len(want), (len(got), len(want))
    dtype = next((x.dtype for x in inputs if isinstance(x, torch.Tensor) and x.is_floating_point()), None)
    rule = None if callable(tol) else _tol_for(tol, dtype)
    n_out = len(got) - len(wrt)
    names = list(names) if names else [f"out{j}" for j in range(n_out)] + [f"grad(inputs[{i}])" for i in wrt]
    for name, g, w in zip(names, got, want):
        if g is None or w is None:
            assert g is None and w is None, f"{name}: one side has no gradient"
        elif g.is_floating_point():
            torch.testing.assert_close(g, w, **(tol(w) if rule is None else rule), msg=lambda m, n=name: f"{n}: {m}")
        else:
            assert torch.equal(g, w), f"{name}: differs"
    return got


def check_low_precision(fast: Callable, twin: Callable, inputs: Sequence, dtype: torch.dtype, *,
                        wrt: Sequence[int] = (), factor: float = 2.0, floor: float = 1e-4,
                        names: Sequence[str] | None = None, seed: int = 1) -> None:
    """The fp16/bf16 rule: the fast op in ``dtype`` is no further from the fp32 twin than
    ``factor`` x the twin's own error in ``dtype`` (+ ``floor``, for where the twin happens to be
    exact), every output and gradient. ``inputs`` are fp32; the floating ones are cast."""
    truth = fwd_bwd(twin, inputs, wrt, seed)
    low = [x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs]
    ref_lp, got = fwd_bwd(twin, low, wrt, seed), fwd_bwd(fast, low, wrt, seed)
    names = list(names) if names else [f"out{j}" for j in range(len(truth))]
    for name, g, r, t in zip(names, got, ref_lp, truth):
        err, ref_err = (g.float() - t).abs().max().item(), (r.float() - t).abs().max().item()
        assert err <= factor * ref_err + floor, f"{dtype} {name}: error {err:.3g} > {factor} x reference's {ref_err:.3g}"


def density_grid_of(model, planes, res: int):
    """The model's activated density on the ``res^3`` grid its mesh extraction queries (what the
    originals' mesh code queries too), ``[res, res, res]``."""
    r = model.cfg.render
    with torch.inference_mode():
        grid, _ = density_grid(lambda p: model.field.query(planes, p[None])[0][0], res, r.box_min, r.box_max,
                               r.mesh_threshold)
    return grid


def interpreter_worker_results(test_file: str) -> tuple[dict, str]:
    """Run ``test_file --worker`` under ``TRITON_INTERPRET=1`` (no GPU visible, the repository on the
    path) in a fresh process, for a module-scoped fixture: ``({case id: its CASE json line}, the
    tail of stderr)``. A worker that dies before printing any case fails the test here."""
    pytest.importorskip("triton")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, test_file, "--worker"], env=env, capture_output=True, text=True,
                          timeout=600)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("CASE "):
            d = json.loads(line[5:])
            results[d["id"]] = d
    if proc.returncode != 0 and not results:
        pytest.fail(f"interpreter worker failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    return results, proc.stderr[-4000:]
