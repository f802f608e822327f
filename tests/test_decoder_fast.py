"""Fast decoder path: folded modulation vs its twin, whole-model reference vs auto (forward and
gradients), every attention/modulation call through the dispatcher, the fixed-shape runner."""
import importlib

import pytest
import torch

from lrm_fast.config import LRMConfig
from lrm_fast.model.compiled import CompiledPlanes
from lrm_fast.model.lrm import LRM
from lrm_fast.ops import _dispatch
from tests._twin import check_low_precision, check_twin

mln = importlib.import_module("lrm_fast.ops.modulated_layer_norm")  # the op's module (its function shares the name)

# the triposr decoder block at tiny sizes (no camera input: the camera section at its defaults)
TRIPOSR_LIKE = dict(decoder={"block": "triposr", "in_norm_groups": 8}, camera={"embed_dim": 1024})


def _modln_inputs(B=2, L=7, D=24, affine=True, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, D, generator=g) * 3 + 1
    w = torch.randn(D, generator=g) if affine else None
    b = torch.randn(D, generator=g) if affine else None
    shift, scale = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    return [t if t is None else t.to(dtype).requires_grad_() for t in (x, w, b, shift, scale)]


def _folded(*a):
    return mln._modulated_layer_norm_folded(*a, 1e-6)


def _ref(*a):
    return mln._modulated_layer_norm_ref(*a, 1e-6)


def _wrt(inputs):  # every input that is given (w and b are None without affine)
    return [i for i, t in enumerate(inputs) if t is not None]


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("B,L,D", [(2, 7, 24), (1, 1, 8), (3, 33, 64)])
def test_folded_modulation_matches_twin_fp32(affine, B, L, D):
    inputs = _modln_inputs(B, L, D, affine)
    check_twin(_folded, _ref, inputs, wrt=_wrt(inputs), tol=dict(atol=1e-5, rtol=1e-5))


def test_folded_modulation_gradcheck_fp64():
    inputs = [t.detach().double().requires_grad_() for t in _modln_inputs(2, 3, 5)]
    assert torch.autograd.gradcheck(lambda *a: mln._modulated_layer_norm_folded(*a, 1e-6), inputs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_folded_modulation_low_precision_rule(dtype):
    inputs = _modln_inputs(2, 9, 64)
    check_low_precision(_folded, _ref, inputs, dtype, wrt=_wrt(inputs))


def test_folded_modulation_low_precision_inference_rule():
    """No-grad low-precision activations take the all-low-precision addcmul (speed on CPU)."""
    x, w, b, shift, scale = (t.detach() for t in _modln_inputs(2, 33, 64))
    truth = mln._modulated_layer_norm_ref(x, w, b, shift, scale, 1e-6)
    low = [t.bfloat16() for t in (x, w, b, shift, scale)]
    with torch.no_grad():
        ref_lp = mln._modulated_layer_norm_ref(*low, 1e-6)
        got = mln._modulated_layer_norm_folded(*low, 1e-6)
    assert got.dtype == ref_lp.dtype == torch.bfloat16
    err, ref_err = (got.float() - truth).abs().max().item(), (ref_lp.float() - truth).abs().max().item()
    assert err <= 2 * ref_err + 1e-4, (err, ref_err)


def test_modulation_bad_shapes():
    x = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match=r"shift/scale \[B, D\]"):
        mln.modulated_layer_norm(x, None, None, torch.randn(2, 4), torch.randn(2, 4), 1e-6)
    with pytest.raises(ValueError, match=r"x \[B, L, D\]"):
        mln.modulated_layer_norm(x[0], None, None, torch.randn(2, 8), torch.randn(2, 8), 1e-6)


# -- whole model ----------------------------------------------------------------------------------
def _model(**sections):
    torch.manual_seed(0)
    cfg = LRMConfig.preset("tiny")
    if sections:
        cfg = cfg.replace(**sections)
    return LRM(cfg)


@pytest.mark.parametrize("variant", ["openlrm", "triposr_like"])
def test_tiny_triplane_and_gradients_reference_vs_auto(variant):
    m = _model(**(TRIPOSR_LIKE if variant == "triposr_like" else {}))
    img = torch.rand(2, 3, 28, 28)
    results = {}
    for backend in ("reference", "auto"):
        m.set_backend(backend).zero_grad()
        planes = m.forward_planes(img)
        (planes * torch.linspace(-1, 1, planes.numel()).view_as(planes)).sum().backward()
        results[backend] = (planes.detach(), {n: p.grad.clone() for n, p in m.named_parameters()
                                              if p.grad is not None})
    (pa, ga), (pb, gb) = results["reference"], results["auto"]
    torch.testing.assert_close(pb, pa, atol=1e-5, rtol=1e-4)
    assert ga.keys() == gb.keys() and len(ga) > 10
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], atol=1e-5, rtol=1e-3, msg=lambda m_, n=n: f"grad {n}: {m_}")


def test_decoder_uses_the_dispatcher_everywhere(monkeypatch):
    calls = []
    real = _dispatch.resolve

    def spy(op, backend, *tensors):
        calls.append((op, backend))
        return real(op, backend, *tensors)

    monkeypatch.setattr(_dispatch, "resolve", spy)
    m = _model(decoder={"layers": 2}).set_backend("reference")
    with torch.no_grad():
        m.forward_planes(torch.rand(1, 3, 28, 28))
    assert calls.count(("attention", "reference")) == 2 * 2  # cross + self per layer
    assert calls.count((mln.MODLN_OP, "reference")) == 3 * 2  # three ModLN per layer
    assert all(b == "reference" for _, b in calls)
    vit_attn = [x for x in m.encoder.vit.modules() if hasattr(x, "fused_attn")]
    assert vit_attn and not any(x.fused_attn for x in vit_attn)
    m.set_backend("auto")
    assert all(x.fused_attn for x in vit_attn)  # timm's SDPA path on for the fast backend


def test_bf16_autocast_model_within_twice_reference_error():
    m = _model().eval()
    img = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        truth = m.set_backend("reference").forward_planes(img)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref_lp = m.set_backend("reference").forward_planes(img).float()
            got = m.set_backend("auto").forward_planes(img).float()
    err, ref_err = (got - truth).abs().max().item(), (ref_lp - truth).abs().max().item()
    assert err <= 2 * ref_err + 1e-4, (err, ref_err)


# -- fixed-shape runner ---------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["openlrm", "triposr_like"])
def test_compiled_eager_matches_forward_planes_batched(variant):
    m = _model(**(TRIPOSR_LIKE if variant == "triposr_like" else {})).eval()
    img = torch.rand(3, 3, 28, 28)
    with torch.no_grad():
        want = m.set_backend("reference").forward_planes(img)
        one = m.forward_planes(img[1:2])
    m.set_backend("auto")
    f = m.compile_planes(batch=3)
    assert f.mode == "eager" and f.warmup_s >= 0
    got = f(img)
    assert got.shape == want.shape == (3, 3, 8, 8, 8)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[1:2], one, atol=1e-5, rtol=1e-4)  # batching mixes no samples
    if m.camera_embedder is not None:
        cam = m.default_source_camera(3) + 0.01 * torch.randn(3, 16)
        with torch.no_grad():
            torch.testing.assert_close(f(img, cam), m.forward_planes(img, cam), atol=1e-5, rtol=1e-4)


def test_compiled_bf16_runner_within_twice_reference_error():
    m = _model().eval()
    img = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        truth = m.set_backend("reference").forward_planes(img)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref_lp = m.forward_planes(img).float()
    got = m.set_backend("auto").compile_planes(2, torch.bfloat16)(img)
    assert got.dtype == torch.float32
    assert next(m.parameters()).dtype == torch.float32  # the runner copied, the model is untouched
    err, ref_err = (got - truth).abs().max().item(), (ref_lp - truth).abs().max().item()
    assert err <= 2 * ref_err + 1e-3, (err, ref_err)


def test_compiled_torch_compile_mode_matches():
    m = _model().eval()
    img = torch.rand(1, 3, 28, 28)
    with torch.no_grad():
        want = m.forward_planes(img)
    # backend="eager" exercises the dynamo capture without a C++ compile on this small CPU
    f = CompiledPlanes(m, 1, mode="compile", compile_kwargs={"backend": "eager"})
    torch.testing.assert_close(f(img), want, atol=1e-5, rtol=1e-4)


def test_compiled_bad_inputs_name_the_problem():
    m = _model().eval()
    f = m.compile_planes(batch=2)
    with pytest.raises(ValueError, match=r"built for images \[2, 3, 28, 28\]"):
        f(torch.rand(1, 3, 28, 28))
    with pytest.raises(ValueError, match="float"):
        f(torch.zeros(2, 3, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"camera feature must be \[2, 16\]"):
        f(torch.rand(2, 3, 28, 28), torch.zeros(2, 20))
    with pytest.raises(ValueError, match="NaN"):
        f(torch.rand(2, 3, 28, 28), torch.full((2, 16), float("nan")))
    with pytest.raises(ValueError, match="needs a CUDA model"):
        CompiledPlanes(m, 1, mode="graph")
    with pytest.raises(ValueError, match="mode must be one of"):
        CompiledPlanes(m, 1, mode="jit")
    with pytest.raises(ValueError, match="dtype must be"):
        CompiledPlanes(m, 1, dtype=torch.float64)


# -- GPU ------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_runner_gpu(dtype):
    m = _model().cuda().eval()
    img = torch.rand(2, 3, 28, 28, device="cuda")
    with torch.no_grad():
        truth = m.set_backend("reference").forward_planes(img)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            ref_lp = m.forward_planes(img).float()
    f = m.set_backend("auto").compile_planes(2, dtype)
    assert f.mode == "graph"
    for _ in range(2):  # replays see new inputs
        img2 = torch.rand(2, 3, 28, 28, device="cuda")
        with torch.no_grad():
            truth2 = m.set_backend("reference").forward_planes(img2)
        got = f(img2)
        if dtype == torch.float32:
            torch.testing.assert_close(got, truth2, atol=1e-4, rtol=1e-3)
    got = f(img)
    err, ref_err = (got - truth).abs().max().item(), (ref_lp - truth).abs().max().item()
    assert dtype == torch.float32 or err <= 2 * ref_err + 1e-3, (err, ref_err)


@pytest.mark.gpu
def test_torch_compile_runner_gpu():
    m = _model().cuda().eval()
    img = torch.rand(1, 3, 28, 28, device="cuda")
    with torch.no_grad():
        want = m.forward_planes(img)
    f = m.compile_planes(1, torch.float32, mode="compile")
    print(f"tiny compile warm-up {f.warmup_s:.1f} s")
    torch.testing.assert_close(f(img), want, atol=1e-4, rtol=1e-3)
