"""Every op's twin against its implementations, and every extension op against opcheck.

- Each implementation registered with ``_dispatch`` takes exactly its twin's arguments (names,
  kinds, order, defaults; annotations aside), so no kernel option lacks a reference. Where an
  implementation is a thin wrapper over ``torch.ops.lrm_fast``, the wrapper is what is compared.
- ``lrm_fast.ops.OPS`` (what ``lrm-fast info`` describes) lists every registered op.
- Every ``torch.ops.lrm_fast`` op of the built extension is named by some implementation's
  ``ext_ops`` (or is a utility, ``UTILITY``), and passes ``torch.library.opcheck`` on the sample
  input below: all of them here, so none is missed (skipped where ``lrm_fast._C`` is not built).
"""
from __future__ import annotations

import inspect

import pytest
import torch

import lrm_fast.ops as ops
from lrm_fast.ops import _dispatch, _ext
from lrm_fast.ops.composite import DENSITY_ACTS
from tests._twin import DEVICES

BUILT = _ext.load_extension()[0]
needs_ext = pytest.mark.skipif(not BUILT, reason=_ext.load_extension()[1])

# library ops that are no op's kernel: queries of the build (`lrm-fast info` prints cpu_isa)
UTILITY = {"cpu_isa": "the CPU instruction set of the kernels"}


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


IMPLS = [(op, impl.name) for op in _dispatch.registered() for impl in _dispatch.implementations(op)]


@pytest.mark.parametrize("op,name", IMPLS, ids=[f"{op}-{name}" for op, name in IMPLS])
def test_implementation_takes_the_twins_arguments(op, name):
    impl = next(i for i in _dispatch.implementations(op) if i.name == name)
    twin = _dispatch.reference(op)
    assert _params(impl.fn) == _params(twin), (
        f"{op}: {name} takes {inspect.signature(impl.fn)}, its twin {inspect.signature(twin)}")


def test_every_op_has_a_twin_and_ops_lists_them_all():
    for op in _dispatch.registered():
        assert callable(_dispatch.reference(op)), op
    assert len(set(ops.OPS)) == len(ops.OPS), "OPS lists an op twice"
    assert set(ops.OPS) == set(_dispatch.registered()), (
        f"OPS misses {sorted(set(_dispatch.registered()) - set(ops.OPS))}, "
        f"lists unregistered {sorted(set(ops.OPS) - set(_dispatch.registered()))}")
    assert len(ops.describe_all("cpu")) == len(ops.OPS)


# ---- the extension's ops -------------------------------------------------------------------


def _library_ops() -> set:
    return {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("lrm_fast::")}


def _named_ext_ops() -> dict:
    named = {}
    for op in _dispatch.registered():
        for impl in _dispatch.implementations(op):
            for e in impl.ext_ops:
                named.setdefault(e, []).append(f"{op}/{impl.name}")
    return named


@needs_ext
def test_every_library_op_is_named_by_an_op():
    lib, named = _library_ops(), _named_ext_ops()
    assert not (set(named) - lib), f"ext_ops not in lrm_fast._C: {sorted(set(named) - lib)}"
    unnamed = lib - set(named) - set(UTILITY)
    assert not unnamed, f"torch.ops.lrm_fast ops that no op names in ext_ops: {sorted(unnamed)}"
    missing = lib - set(SAMPLES)
    assert not missing, f"no opcheck sample for {sorted(missing)}"


# sample inputs, one builder per library op: small, float32 unless the op wants otherwise; the
# differentiable ops get inputs that require grad so opcheck covers their autograd registration


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _rays(R, g):
    o = torch.randn(R, 3, generator=g) * 0.2 - torch.tensor([0.0, 2.0, 0.0])
    d = torch.nn.functional.normalize(torch.tensor([0.0, 1.0, 0.0]) + 0.3 * torch.randn(R, 3, generator=g), dim=-1)
    return o, d


def _composite_args():
    g = _gen(1)
    R, S = 5, 7
    rgb, sigma = torch.rand(R, S, 3, generator=g), torch.rand(R, S, generator=g) * 3
    deltas = torch.rand(R, S, generator=g) * 0.3 + 0.01
    return rgb, sigma, deltas, torch.cumsum(deltas, 1) + 1.0, torch.rand(R, 3, generator=g)


def _samples_args(packed=False):
    g = _gen(2)
    R, S = 5, 8
    o, d = _rays(R, g)
    t = torch.sort(torch.rand(R, S, generator=g) * 3.0 + 0.5, -1).values
    raw = torch.randn(R, S, 4, generator=g) * 3
    bg = torch.rand(R, 3, generator=g)
    if not packed:
        return raw, t, o, d, bg
    counts = torch.tensor([0, 1, 2, 8, 5])
    keep = torch.arange(S) < counts[:, None]
    off = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return raw[keep], t[keep], off, o, d, bg


PARAMS = (-1.0, 1.0, -1.0, DENSITY_ACTS["softplus"], True)


def _cotangents(R, g):
    return torch.randn(R, 3, generator=g), torch.randn(R, generator=g), torch.randn(R, generator=g)


def _composite_bwd():
    rgb, sigma, deltas, depths, bg = _composite_args()
    _, depth, opacity, t_final, n_used = torch.ops.lrm_fast.composite_fwd(rgb, sigma, deltas, depths, bg, 0.0)
    return (*_cotangents(rgb.shape[0], _gen(3)), rgb, sigma, deltas, depths, bg, depth, opacity, t_final, n_used)


def _samples_bwd():
    raw, t, o, d, bg = _samples_args()
    _, depth, opacity, t_final, n_used = torch.ops.lrm_fast.composite_samples_fwd(raw, t, o, d, bg, *PARAMS, 0.0)
    return (*_cotangents(t.shape[0], _gen(3)), raw, t, o, d, bg, *PARAMS, depth, opacity, t_final, n_used)


def _packed_bwd():
    raw, t, off, o, d, bg = _samples_args(packed=True)
    _, depth, opacity, t_final, n_used = torch.ops.lrm_fast.composite_samples_packed_fwd(
        raw, t, off, o, d, bg, *PARAMS, 0.0)
    return (*_cotangents(o.shape[0], _gen(3)), raw, t, off, o, d, bg, *PARAMS, depth, opacity, t_final, n_used)


def _grad(*xs):
    return [x.requires_grad_(True) for x in xs]


def _composite_fwd(thresh):
    rgb, sigma, deltas, depths, bg = _composite_args()
    return (*_grad(rgb, sigma), deltas, depths, *_grad(bg), thresh)


def _samples_fwd(thresh):
    raw, t, o, d, bg = _samples_args()
    return (*_grad(raw), t, o, d, *_grad(bg), *PARAMS, thresh)


def _packed_fwd(thresh):
    raw, t, off, o, d, bg = _samples_args(packed=True)
    return (*_grad(raw), t, off, o, d, *_grad(bg), *PARAMS, thresh)


def _occupancy(step, sized=False):
    """The renderer's skipping steps on a few rays (2 items): the inputs of step ``step``; ``sized``:
    with the output sizes the renderer gives the packing ops."""
    g = _gen(4)
    B, R, A, F, G = 2, 6, 10, 7, 5
    o, d = _rays(B * R, g)
    tc = torch.linspace(0.8, 3.2, A).expand(B * R, A).contiguous()
    tf = torch.sort(torch.rand(B * R, F, generator=g) * 2.4 + 0.8).values
    grid = torch.rand(B, G, G, G, generator=g) < 0.4
    mark = (o, d, tc, grid, R, -1.0, 1.0)
    if step == "mark":
        return mark
    occ, keep, counts = torch.ops.lrm_fast.occupancy_mark(*mark)
    off = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    if step == "pack":
        return (o, d, tc, keep, off) + (int(off[-1]),) * sized
    raw_c = torch.randn(int(off[-1]), 4, generator=g)
    if step == "unpack":
        return raw_c[:, 0].contiguous(), keep, off
    merge = (o, d, tc, occ, keep, off, tf, grid, R, -1.0, 1.0)
    if step == "merge":
        return merge
    t, keep_m, src, cnt, need = torch.ops.lrm_fast.occupancy_merge(*merge)
    off_m = torch.cat([cnt.new_zeros(1), cnt.cumsum(0)])
    off_n = torch.cat([need.new_zeros(1), need.cumsum(0)])
    return (o, d, t, keep_m, src, off_m, off_n, raw_c) + (int(off_m[-1]), int(off_n[-1])) * sized


def _triplane(grad, agg=0):
    g = _gen(5)
    B, C, H, N, hidden, out = 2, 4, 6, 11, 8, 4
    planes = torch.randn(B, 3, C, H, H, generator=g)
    pts = torch.rand(B, N, 3, generator=g) * 2 - 1
    dims = [3 * C if agg == 0 else C, hidden, out]
    ws = [torch.randn(b, a, generator=g) * 0.3 for a, b in zip(dims[:-1], dims[1:])]
    bs = [torch.randn(b, generator=g) * 0.1 for b in dims[1:]]
    if grad:
        _grad(planes, *ws, *bs)
    return planes, pts, ws, bs


def _triplane_bwd():
    planes, pts, ws, bs = _triplane(False)
    return torch.randn(2, 11, 4, generator=_gen(6)), planes, pts, ws, bs, 0, 0


def _rays_sample():
    o, d = _rays(9, _gen(7))
    return o, d


def _coarse():
    g = _gen(8)
    depths = torch.sort(torch.rand(6, 9, generator=g) * 2 + 1, -1).values
    return depths, torch.rand(6, 8, generator=g)


def _merge(bwd=False):
    g = _gen(9)
    ta, tb = torch.sort(torch.rand(4, 5, generator=g), -1).values, torch.sort(torch.rand(4, 3, generator=g), -1).values
    if bwd:
        return torch.randn(4, 8, 2, generator=g), ta, tb
    return ta, *_grad(torch.randn(4, 5, 2, generator=g)), tb, *_grad(torch.randn(4, 3, 2, generator=g))


def _cams():
    c2w = torch.eye(4)[None].clone()
    c2w[0, :3, 3] = torch.tensor([0.0, -2.0, 0.0])
    return c2w, torch.tensor([[0.8, 0.8, 0.5, 0.5]])


# op -> [(case id, builder of the args, opcheck's test_utils or None for all of them)]
SAMPLES = {
    "generate_rays": [("all_pixels", lambda: (*_cams(), 3, 4, None), None),
                      ("pixels", lambda: (*_cams(), 3, 4, torch.randint(0, 3, (1, 5, 2), generator=_gen(10))), None)],
    "ray_box": [("", lambda: (*_rays_sample(), -1.0, 1.0), None)],
    "stratified": [("det", lambda: (torch.full((4,), 1.0), torch.full((4,), 3.0), 5, None), None),
                   ("jitter", lambda: (torch.full((4,), 1.0), torch.full((4,), 3.0), 5,
                                       torch.rand(4, 5, generator=_gen(11))), None)],
    "importance": [("det", lambda: (*_coarse(), 6, None), None),
                   ("random", lambda: (*_coarse(), 6, torch.rand(6, 6, generator=_gen(12))), None)],
    "ray_points": [("", lambda: (*_rays_sample(), torch.rand(9, 4, generator=_gen(13)) * 3), None)],
    "merge_samples": [("", _merge, None)],
    "merge_samples_bwd": [("", lambda: _merge(bwd=True), None)],
    "composite_fwd": [("", lambda: _composite_fwd(0.0), None), ("early_stop", lambda: _composite_fwd(0.3), None)],
    "composite_bwd": [("", _composite_bwd, None)],
    "composite_weights": [("", lambda: _composite_args()[1:3], None)],
    "composite_samples_fwd": [("", lambda: _samples_fwd(0.0), None), ("early_stop", lambda: _samples_fwd(0.3), None)],
    "composite_samples_bwd": [("", _samples_bwd, None)],
    "composite_samples_weights": [("", lambda: (*_samples_args()[:4], *PARAMS), None)],
    "composite_samples_packed_fwd": [("", lambda: _packed_fwd(0.0), None),
                                     ("early_stop", lambda: _packed_fwd(0.3), None)],
    "composite_samples_packed_bwd": [("", _packed_bwd, None)],
    "composite_samples_packed_weights": [("", lambda: (*_samples_args(packed=True)[:5], *PARAMS), None)],
    "occupancy_mark": [("", lambda: _occupancy("mark"), None)],
    "occupancy_pack": [("", lambda: _occupancy("pack"), None), ("sized", lambda: _occupancy("pack", True), None)],
    "occupancy_unpack": [("", lambda: _occupancy("unpack"), None)],
    "occupancy_merge": [("", lambda: _occupancy("merge"), None)],
    "occupancy_gather": [("", lambda: _occupancy("gather"), None),
                         ("sized", lambda: _occupancy("gather", True), None)],
    "triplane_mlp_fwd": [("concat", lambda: (*_triplane(True), 0, 1), None),
                         ("mean", lambda: (*_triplane(True, agg=2), 2, 1), None)],
    "triplane_mlp_bwd": [("", _triplane_bwd, None)],
    # a string in, a string out: the AOT-dispatch test compares outputs as tensors
    "cpu_isa": [("", lambda: (None,), ("test_schema", "test_autograd_registration", "test_faketensor"))],
}
CASES = [(op, case, build, utils) for op, cases in SAMPLES.items() for case, build, utils in cases]


def _to(x, device):
    if isinstance(x, (list, tuple)):
        return type(x)(_to(y, device) for y in x)
    if isinstance(x, torch.Tensor):
        return x.detach().to(device).requires_grad_(x.requires_grad)
    return x


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op,case,build,utils", CASES, ids=[f"{op}-{c}" if c else op for op, c, _, _ in CASES])
def test_opcheck(op, case, build, utils, device):
    if not _ext.defined(op):
        pytest.skip(f"this build of lrm_fast._C has no {op}")
    if device != "cpu" and (op in UTILITY or not _ext.has_kernel(op, device.upper())):
        pytest.skip(f"{op} has no {device} kernel")
    kw = {} if utils is None else dict(test_utils=utils)
    torch.library.opcheck(getattr(torch.ops.lrm_fast, op), _to(build(), device), **kw)
