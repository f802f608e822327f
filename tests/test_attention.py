"""ops.attention: every backend vs the reference twin, forward and backward.

Tolerance rule (docs/architecture.md §5): fp32 tight; bf16/fp16: the backend's error vs an fp32 reference is
at most 2x the error of the reference op itself run in that precision (+ a tiny floor for the
case where the reference happens to be exact).
"""
import sys

import pytest
import torch

from lrm_fast.ops import _dispatch
from lrm_fast.ops.attention import _attention_ref, attention, probe_xformers
from tests._twin import check_low_precision, check_twin

attn_mod = sys.modules["lrm_fast.ops.attention"]  # the module (lrm_fast.ops.attention is the function)

CPU_BACKENDS = ["sdpa", "auto", "fast"]
# (B, Lq, Lk, H, Dh): self-attention, cross-attention (Lq != Lk, both ways), head dims 16 (tiny:
# 32 wide / 2 heads), 32 and 64 (small 512/8, base 768/12, large and paper 1024/16), odd lengths,
# a single query.
SHAPES = [(2, 16, 16, 2, 32), (1, 48, 17, 3, 64), (2, 5, 37, 2, 64), (1, 1, 9, 1, 32), (3, 13, 13, 4, 16)]


NAMES = ("out", "v_q", "v_k", "v_v")


def _qkv(shape, dtype=torch.float32, device="cpu", seed=0):
    B, Lq, Lk, H, D = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Lq, H, D, generator=g)
    k = torch.randn(B, Lk, H, D, generator=g)
    v = torch.randn(B, Lk, H, D, generator=g)
    return [t.to(device, dtype) for t in (q, k, v)]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fp32_forward_backward_match_reference(backend, shape):
    check_twin(lambda *a: attention(*a, backend=backend), _attention_ref, _qkv(shape), wrt=(0, 1, 2),
               tol=dict(atol=2e-5, rtol=1e-4), names=NAMES)


def _check_low_precision(fn, shape, dtype, device="cpu"):
    check_low_precision(fn, _attention_ref, _qkv(shape, torch.float32, device), dtype, wrt=(0, 1, 2), names=NAMES)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: "x".join(map(str, s)))
def test_low_precision_within_twice_reference_error(dtype, shape):
    _check_low_precision(lambda *a: attention(*a, backend="auto"), shape, dtype)


def test_cpu_auto_is_sdpa_and_says_why_not_xformers():
    q = torch.randn(1, 4, 2, 32)
    name, _, why = _dispatch.resolve("attention", "auto", q, q, q)
    assert name == "sdpa"
    assert "xformers" in why and "cpu" in why
    line = _dispatch.describe("attention", "cpu")
    assert line.startswith("attention: sdpa") and "xformers" in line
    with pytest.raises(RuntimeError, match="xformers.*cannot run here"):
        attention(q, q, q, backend="xformers")


def test_xformers_probe_runs_a_call_and_caches(monkeypatch):
    """Importing is not enough: the probe must run a call; a failure becomes the reason, once."""
    calls = []

    def broken():
        calls.append(1)
        raise NotImplementedError("No operator found for `memory_efficient_attention_forward`")

    monkeypatch.setattr(attn_mod, "_XF_CACHE", {})
    monkeypatch.setattr(attn_mod, "_xformers_ops", broken)
    for _ in range(3):
        ok, why = probe_xformers(torch.device("cuda:0"), torch.bfloat16, 64)
        assert not ok and "No operator found" in why
    assert len(calls) == 1
    ok, why = probe_xformers(torch.device("cuda:0"), torch.bfloat16, 32)  # new key: probes again
    assert len(calls) == 2


def test_bad_inputs_name_the_problem():
    q = torch.randn(1, 4, 2, 8)
    with pytest.raises(ValueError, match="4-d"):
        attention(q[0], q, q)
    with pytest.raises(ValueError, match="shape mismatch"):
        attention(q, q, torch.randn(1, 5, 2, 8))
    with pytest.raises(ValueError, match="shape mismatch"):
        attention(q, torch.randn(1, 4, 2, 16), torch.randn(1, 4, 2, 16))
    with pytest.raises(ValueError, match="dtype mismatch"):
        attention(q, q.double(), q)
    with pytest.raises(ValueError, match="device mismatch"):
        attention(q, q.to("meta"), q)
    with pytest.raises(ValueError, match="floating-point"):
        attention(*(torch.ones(1, 4, 2, 8, dtype=torch.long),) * 3)
    with pytest.raises(ValueError, match="unknown backend"):
        attention(q, q, q, backend="flash9")


# -- GPU ----------------------------------------------------------------------------------------
def _xformers_or_skip(dtype, head_dim):
    ok, why = probe_xformers(torch.device("cuda"), dtype, head_dim)
    if not ok:
        pytest.skip(f"xformers cannot run on this GPU: {why}")


@pytest.mark.gpu
@pytest.mark.parametrize("shape", SHAPES[:4], ids=lambda s: "x".join(map(str, s)))
def test_xformers_fp32_matches_reference_gpu(shape):
    _xformers_or_skip(torch.float32, shape[-1])
    # TF32 may be on in the reference matmuls on Ampere+; keep the bound honest for fp32 kernels
    check_twin(lambda *a: attention(*a, backend="xformers"), _attention_ref, _qkv(shape, device="cuda"),
               wrt=(0, 1, 2), tol=dict(atol=2e-3, rtol=2e-3), names=NAMES)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["xformers", "sdpa", "auto"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(2, 3072, 577, 12, 64), (1, 1024, 1024, 16, 64), (2, 48, 17, 2, 32)],
                         ids=lambda s: "x".join(map(str, s)))
def test_gpu_low_precision_within_twice_reference_error(backend, dtype, shape):
    if backend == "xformers":
        _xformers_or_skip(dtype, shape[-1])
    _check_low_precision(lambda *a: attention(*a, backend=backend), shape, dtype, device="cuda")


@pytest.mark.gpu
def test_gpu_auto_choice_is_reported():
    line = _dispatch.describe("attention", "cuda", torch.bfloat16)
    print(line)
    ok, why = probe_xformers(torch.device("cuda"), torch.bfloat16, 64)
    assert line.startswith("attention: xformers" if ok else "attention: sdpa"), line
