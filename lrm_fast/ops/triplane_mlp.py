"""Triplane field query: bilinear sampling of 3 planes + feature aggregation + NeRF MLP.

``triplane_mlp(planes, points, weights, biases)``:

* planes ``[B, 3, C, H, W]``; points ``[B, N, 3]`` in the normalized box [-1, 1]^3.
* Plane ``i`` is sampled at 2-d coordinates (u, v) with ``F.grid_sample(align_corners=False,
  padding_mode="zeros")`` semantics (u indexes W, v indexes H): plane 0 at (x, y), plane 1 at
  (x, z), plane 2 at (z, y). This is OpenLRM's ``generate_planes`` (EG3D with the issue-67 fix):
  ``coords @ inv(axes_i)[:, :2]``.
* aggregate: ``"concat"`` (OpenLRM: [f0, f1, f2] -> 3C), ``"sum"`` or ``"mean"`` (-> C).
* MLP: ``x -> act(x W0^T + b0) -> ... -> x W_{L-1}^T + b_{L-1}`` (no activation after the last).
  weights[i] ``[out_i, in_i]``, biases[i] ``[out_i]``, as ``nn.Linear`` stores them.
* returns the raw MLP output ``[B, N, out]`` (OpenLRM: channel 0 = raw density, 1:4 = rgb logits);
  activations are applied by the caller (``field/triplane.py``): cheap elementwise work.

Backends: ``reference`` (grid_sample + matmuls under autograd), and where registered ``triton``
(CUDA) and ``cpp`` (CPU float32: lrm_fast._C fused sample + MLP per block of points, with a
backward that recomputes each block, so autograd saves only the inputs). The fused paths give no
gradient to the points: calls whose points require grad take the reference.
"""
from __future__ import annotations

import contextlib
import os
import warnings
import weakref
from typing import Sequence

import torch
import torch.nn.functional as F

from ..field.activations import HIDDEN
from . import _dispatch, _ext

OP = "triplane_mlp"

# (u, v) coordinate indices of each plane: plane 0 (x, y), plane 1 (x, z), plane 2 (z, y).
PLANE_AXES = ((0, 1), (0, 2), (2, 1))

_ACTS = {name: a.fn for name, a in HIDDEN.items()}  # field/activations.py: the one table


def sample_triplane(planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear features of each plane: planes [B,3,C,H,W], points [B,N,3] -> [B, 3, N, C]."""
    B, P, C, H, W = planes.shape
    N = points.shape[1]
    grids = torch.stack([points[..., list(ax)] for ax in PLANE_AXES], dim=1)  # [B, 3, N, 2]
    # Coordinates stay fp32 (OpenLRM samples with float coordinates; autocast runs grid_sample in
    # fp32): in bf16 a coordinate near 1 is off by up to 2^-8, an eighth of a texel at 64^2,
    # and in fp16 |x| > 65504 becomes inf (NaN features). Low-precision planes are sampled in fp32
    # and the features rounded to the planes' dtype once.
    sdt = planes.dtype if planes.dtype in (torch.float32, torch.float64) else torch.float32
    feats = F.grid_sample(planes.reshape(B * P, C, H, W).to(sdt), grids.reshape(B * P, 1, N, 2).to(sdt),
                          mode="bilinear", padding_mode="zeros", align_corners=False)  # [B*3, C, 1, N]
    return feats.to(planes.dtype).reshape(B, P, C, N).permute(0, 1, 3, 2)


def aggregate_features(feats: torch.Tensor, mode: str) -> torch.Tensor:
    """[B, 3, N, C] -> [B, N, 3C] (concat, plane-major as OpenLRM) or [B, N, C] (sum/mean)."""
    if mode == "concat":
        B, P, N, C = feats.shape
        return feats.permute(0, 2, 1, 3).reshape(B, N, P * C)
    if mode == "sum":
        return feats.sum(1)
    if mode == "mean":
        return feats.mean(1)
    raise ValueError(f"unknown triplane aggregate {mode!r} (concat, sum, mean)")


def _triplane_mlp_ref(planes, points, weights, biases, aggregate="concat", activation="relu"):
    x = aggregate_features(sample_triplane(planes, points), aggregate)
    act = _ACTS[activation]
    for i, (w, b) in enumerate(zip(weights, biases)):
        x = F.linear(x, w.to(x.dtype), None if b is None else b.to(x.dtype))
        if i < len(weights) - 1:
            x = act(x)
    return x


_dispatch.register_reference(OP, _triplane_mlp_ref)


def triplane_mlp(planes: torch.Tensor, points: torch.Tensor, weights: Sequence[torch.Tensor],
                 biases: Sequence[torch.Tensor | None], aggregate: str = "concat",
                 activation: str = "relu", backend: str = "auto") -> torch.Tensor:
    """Query a triplane NeRF field at points. See the module docstring for the exact semantics.

    Args:
        planes: ``[B, 3, C, H, W]`` float tensor.
        points: ``[B, N, 3]`` in [-1, 1]^3 (outside the box the features are zero).
        weights / biases: the MLP's Linear parameters, first layer's ``in`` = 3C (concat) or C.
        aggregate: ``"concat" | "sum" | "mean"``. activation: ``"relu" | "silu" | "softplus"``.
        backend: ``"reference" | "triton" | "auto" | "fast"``.
    Returns:
        ``[B, N, out]`` raw MLP outputs, in the planes' dtype.
    """
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be [B, 3, C, H, W], got {tuple(planes.shape)}")
    if points.dim() != 3 or points.shape[-1] != 3 or points.shape[0] != planes.shape[0]:
        raise ValueError(f"points must be [B, N, 3] with B={planes.shape[0]}, got {tuple(points.shape)}")
    if len(weights) != len(biases) or not weights:
        raise ValueError("weights and biases must be non-empty lists of the same length")
    if activation not in _ACTS:
        raise ValueError(f"unknown activation {activation!r} ({sorted(_ACTS)})")
    C = planes.shape[2]
    want = 3 * C if aggregate == "concat" else C
    if weights[0].shape[1] != want:
        raise ValueError(f"first MLP layer takes {weights[0].shape[1]} features but {aggregate} of "
                         f"{C}-channel planes gives {want}")
    _, fn, _ = _dispatch.resolve(OP, backend, planes, points, *weights, *(b for b in biases if b is not None))
    return fn(planes, points, list(weights), list(biases), aggregate, activation)


# ---------------------------------------------------------------------------------------------
# Triton fused path (kernels/triplane_mlp.py, imported lazily as lrm_fast.kernels.triplane_mlp)
# ---------------------------------------------------------------------------------------------

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_HIDDEN = 128   # register tiles [BLOCK_N, hidden]: wider MLPs would spill; use the reference
_MAX_OUT = 64
_MAX_CHANNELS = 256


def _pow2(n: int, lo: int = 16) -> int:
    """Smallest power of two >= max(n, lo): tl.arange needs powers of two, tl.dot dims >= 16."""
    return max(lo, 1 << max(0, int(n) - 1).bit_length())


def _triton_probe(planes, points=None, *params):
    ok, where = _dispatch.triton_ready(planes)
    if not ok:
        return False, where
    dev = planes.device
    if planes.dtype not in _TRITON_DTYPES:
        return False, f"dtype {planes.dtype} not supported (float32, float16, bfloat16)"
    if points is not None and getattr(points, "requires_grad", False):
        return False, "points require grad: the fused kernel does not differentiate the points"
    if points is not None and getattr(points, "device", dev) != dev:
        return False, f"points on {points.device}, planes on {dev}"
    weights = [t for t in params if getattr(t, "dim", lambda: 0)() == 2]
    if weights and len(planes.shape) == 5:
        why = _shared_memory_refusal(planes, weights, _needs_grad([planes, *params]))
        if why:
            return False, why
    return True, f"fused sample+MLP Triton kernel ({where})"


# Shared memory of the compiled kernels (bytes, ``metadata.shared``), measured by compiling for sm_90
# (``python tools/compile_check.py --shared``; triton 3.8 here, and the two refused fp32
# shapes agree with triton 3.6's 327,680 / 262,144 B). Key: (kernel, element bytes, CP, HP, BLOCK_N).
# Each (padded C, padded hidden) is one compile; NUM_MID (depth) and out width did not change it.
SMEM_MEASURED = {
    ("fwd", 4, 64, 64, 64): 98304, ("fwd", 4, 64, 128, 64): 327680, ("fwd", 4, 256, 64, 64): 262144,
    ("fwd", 4, 128, 64, 64): 131072, ("fwd", 4, 64, 64, 128): 98304, ("fwd", 4, 64, 64, 32): 65536,
    ("fwd", 4, 64, 32, 64): 49152, ("fwd", 4, 16, 64, 64): 98304, ("fwd", 4, 64, 64, 16): 49152,
    ("fwd", 2, 64, 64, 64): 16384, ("fwd", 2, 64, 128, 64): 49152, ("fwd", 2, 256, 64, 64): 65536,
    ("bwd", 4, 64, 64, 64): 98304, ("bwd", 4, 64, 128, 64): 327680, ("bwd", 4, 256, 64, 64): 262144,
    ("bwd", 4, 128, 64, 64): 131072, ("bwd", 2, 64, 128, 64): 81920, ("bwd", 2, 256, 64, 64): 81920,
}
SMEM_LIMIT_SM90 = 232448   # H100 / H200: the opt-in maximum per block (227 KiB)
_SMEM_FAILED: set = set()  # (kernel, dtype, CP, HP, BLOCK_N, warps, device) that raised OutOfResources here


def triton_shared_bytes(kernel: str, dtype: torch.dtype, CP: int, HP: int, block: int) -> int:
    """Shared memory one program of the fused kernel needs: the measured table, else an upper bound,
    elem x (kh HP^2 + kc CP HP) with (kh, kc) = (6, 4) in fp32 (TF32x3 stages split operands) and
    (2, 2) in 16 bits: at or above every measured entry, so an unmeasured shape is not accepted where
    a measured one fails (the launch's OutOfResources fallback covers any remaining miss)."""
    esz = 4 if dtype == torch.float32 else 2
    got = SMEM_MEASURED.get((kernel, esz, CP, HP, block))
    return got if got is not None else smem_bound(esz, CP, HP)


def smem_bound(esz: int, CP: int, HP: int) -> int:
    kh, kc = (6, 4) if esz == 4 else (2, 2)
    return esz * (kh * HP * HP + kc * CP * HP)


def _smem_limit(device: torch.device) -> int:
    if device.type == "cuda":
        try:
            return int(torch.cuda.get_device_properties(device).shared_memory_per_block_optin)
        except Exception:  # noqa: BLE001 - older torch: assume Hopper's limit
            return SMEM_LIMIT_SM90
    return SMEM_LIMIT_SM90  # the interpreter: decide as an H100 would


def _shared_memory_refusal(planes, weights, backward: bool) -> str | None:
    """Why the fused kernels cannot launch for these shapes on this device (shared memory), or None."""
    CP, HP = _pow2(planes.shape[2]), _pow2(weights[0].shape[0])
    dtype, dev = planes.dtype, torch.device(planes.device)
    limit = _smem_limit(dev)
    for kernel in ("fwd", "bwd") if backward else ("fwd",):
        block, warps = _launch_cfg(backward=kernel == "bwd")
        if (kernel, dtype, CP, HP, block, warps, str(dev)) in _SMEM_FAILED:
            return f"the {kernel} kernel ran out of shared memory here for C={planes.shape[2]}, hidden={HP}"
        need = triton_shared_bytes(kernel, dtype, CP, HP, block)
        if need > limit:
            return (f"the {kernel} kernel needs {need} B of shared memory for {str(dtype)[6:]} "
                    f"C={planes.shape[2]} (padded {CP}), hidden {weights[0].shape[0]} (padded {HP}); "
                    f"the device allows {limit} B")
    return None


def _launch_guard(device: torch.device):
    """Triton launches on the current CUDA device's context: make it the tensors' device."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _triton_supports_mlp(weights, biases) -> str | None:
    """Why this MLP cannot use the fused kernel, or None when it can."""
    if len(weights) < 2:
        return "the fused kernel needs >= 2 Linear layers"
    hidden = weights[0].shape[0]
    for i, w in enumerate(weights[1:], 1):
        if w.shape[1] != hidden or (i < len(weights) - 1 and w.shape[0] != hidden):
            return "the fused kernel needs every hidden layer to have the same width"
    if hidden > _MAX_HIDDEN:
        return f"hidden width {hidden} > {_MAX_HIDDEN}"
    if weights[-1].shape[0] > _MAX_OUT:
        return f"output width {weights[-1].shape[0]} > {_MAX_OUT}"
    return None


def _pack_mlp(weights, biases, C: int, aggregate: str, dtype: torch.dtype):
    """Zero-padded, transposed ([in, out]) weight tiles the kernel reads, in the compute dtype."""
    dev = weights[0].device
    hidden, out = weights[0].shape[0], weights[-1].shape[0]
    CP, HP, OP = _pow2(C), _pow2(hidden), _pow2(out)
    nw0 = 3 if aggregate == "concat" else 1
    w0 = torch.zeros(nw0, CP, HP, device=dev, dtype=dtype)
    w0t = weights[0].detach().t().to(dtype)  # [in, hidden]
    for p in range(nw0):
        w0[p, :C, :hidden] = w0t[p * C:(p + 1) * C]
    mids = weights[1:-1]
    wm = torch.zeros(max(1, len(mids)), HP, HP, device=dev, dtype=dtype)
    bm = torch.zeros(max(1, len(mids)), HP, device=dev, dtype=torch.float32)
    for i, w in enumerate(mids):
        wm[i, :hidden, :hidden] = w.detach().t().to(dtype)
        if biases[i + 1] is not None:
            bm[i, :hidden] = biases[i + 1].detach().float()
    wl = torch.zeros(HP, OP, device=dev, dtype=dtype)
    wl[:hidden, :out] = weights[-1].detach().t().to(dtype)
    b0 = torch.zeros(HP, device=dev, dtype=torch.float32)
    if biases[0] is not None:
        b0[:hidden] = biases[0].detach().float()
    bl = torch.zeros(OP, device=dev, dtype=torch.float32)
    if biases[-1] is not None:
        bl[:out] = biases[-1].detach().float()
    # Biases stay fp32: the kernel adds them to fp32 accumulators.
    return (w0, b0, wm, bm, wl, bl), (CP, HP, OP)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


_PACK_CACHE: list = []   # [(key, weakrefs, packed)], most recent first


def _pack_mlp_cached(weights, biases, C: int, aggregate: str, dtype: torch.dtype):
    """``_pack_mlp`` with a small cache: a render calls the op once per chunk and sample pass with
    the same weights, and packing is ~15 tiny kernel launches. An entry is reused only while
    every parameter is the very same live tensor (weakref identity), at the same storage, and
    not modified in place since (``_version``; optimizer steps bump it), and was packed in the same
    inference mode (tiles made under ``torch.inference_mode`` cannot be saved for backward)."""
    params = [t for t in list(weights) + list(biases) if t is not None]
    if any(t.is_inference() for t in params):
        # inference tensors have no version counter (``_version`` raises): no way to see an in-place
        # change, so pack afresh (a model built under inference_mode; ~15 tiny launches per call)
        return _pack_mlp(weights, biases, C, aggregate, dtype)
    # Packed inside inference_mode, the tiles are inference tensors: a later grad-mode call could not
    # save them for backward. The mode is part of the key (inference_mode may reuse either kind, but
    # keeping them apart is simpler and costs one extra pack).
    key = (C, aggregate, dtype, torch.is_inference_mode_enabled(), tuple(b is None for b in biases),
           tuple((t.data_ptr(), t._version, tuple(t.shape), t.dtype) for t in params))
    for i, (k, refs, packed) in enumerate(_PACK_CACHE):
        if k == key and all(r() is t for r, t in zip(refs, params)):
            if i:
                _PACK_CACHE.insert(0, _PACK_CACHE.pop(i))
            return packed
    packed = _pack_mlp(weights, biases, C, aggregate, dtype)
    _PACK_CACHE.insert(0, (key, [weakref.ref(t) for t in params], packed))
    del _PACK_CACHE[4:]
    return packed


def _launch_cfg(backward: bool) -> tuple[int, int]:
    """(BLOCK_N, num_warps). Fixed heuristics, no autotune (the interpreter cannot autotune, and
    every autotune config is another compile). Chosen from ptxas register/spill reports for sm_90
    (``python tools/compile_check.py``, no GPU needed; not yet timed), base field:
    forward 64 points x 8 warps: no spills in fp32/bf16 (4 warps: ~750 B/thread spilled);
    backward 64 x 8: 56 B (bf16) / ~0.9 KB (fp32, TF32x3) spilled, less than 16 warps or 128
    points. ``LRM_FAST_TRIPLANE_LAUNCH="fwd_block,fwd_warps,bwd_block,bwd_warps"`` overrides them
    (tuning on a GPU without editing code; honoured by the interpreter too, so the GPU's blocks can be
    bounds-checked on a CPU, see ``tests/bounds_check.py``); blocks must be powers of two >= 16."""
    env = os.environ.get("LRM_FAST_TRIPLANE_LAUNCH")
    if env:
        try:
            fb, fw, bb, bw = (int(x) for x in env.split(","))
        except ValueError:
            raise ValueError(f"LRM_FAST_TRIPLANE_LAUNCH must be 4 integers "
                             f"'fwd_block,fwd_warps,bwd_block,bwd_warps', got {env!r}") from None
        for b in (fb, bb):
            if b < 16 or b & (b - 1):
                raise ValueError(f"LRM_FAST_TRIPLANE_LAUNCH: block {b} is not a power of two >= 16")
        return (bb, bw) if backward else (fb, fw)
    if _dispatch.interpreting():
        return 16, 1
    return 64, 8


class _TriplaneMLPTriton(torch.autograd.Function):
    """Fused forward/backward. Inputs: planes, points, aggregate, activation, n_layers,
    then the L weights and the L biases (None allowed) as separate tensors so autograd sees them."""

    @staticmethod
    def forward(ctx, planes, points, aggregate, activation, n_layers, *params):
        from lrm_fast.kernels import triplane_mlp as K

        weights, biases = list(params[:n_layers]), list(params[n_layers:])
        B, _, C, H, W = planes.shape
        N = points.shape[1]
        out_dim = weights[-1].shape[0]
        dtype = planes.dtype
        # channels-last once, inside the op: one corner = one contiguous C-vector load
        planes_cl = planes.detach().permute(0, 1, 3, 4, 2).contiguous()
        pts = points.detach().contiguous()
        packed, (CP, HP, OP) = _pack_mlp_cached(weights, biases, C, aggregate, dtype)
        out = torch.empty(B, N, out_dim, device=planes.device, dtype=dtype)
        # fp32: torch's matmuls are full fp32 unless allow_tf32; "tf32x3" (3 TF32 tensor-core
        # products, ~fp32 accuracy) keeps that promise at tensor-core speed, where "ieee" would
        # fall back to FMA loops (slow, and minutes of ptxas time for the backward). fp16/bf16
        # operands ignore the setting.
        prec = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"
        BLOCK_N, warps = _launch_cfg(backward=False)
        meta = dict(AGG=K.AGG_CODES[aggregate], ACT=K.ACT_CODES[activation], NUM_MID=n_layers - 2,
                    BLOCK_N=BLOCK_N, CP=CP, HP=HP, OP=OP, PREC=prec)
        if B * N > 0:
            grid = (_cdiv(N, BLOCK_N), B)
            with _launch_guard(planes.device):
                K.triplane_mlp_fwd_kernel[grid](planes_cl, pts, *packed, out, N, H, W, C, out_dim,
                                                num_warps=warps, **meta)
        # the original parameters too: the reference backward needs them if the bwd kernel cannot launch
        ctx.save_for_backward(planes_cl, pts, *packed, *(p for p in params if p is not None))
        ctx.names = (aggregate, activation)
        ctx.meta, ctx.shapes = meta, (B, N, C, H, W, out_dim)
        ctx.n_layers = n_layers
        ctx.param_info = [(p.shape, p.dtype) if p is not None else None for p in params]
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, v_out):
        from lrm_fast.kernels import triplane_mlp as K

        planes_cl, pts, w0, b0, wm, bm, wl, bl, *given = ctx.saved_tensors
        given = iter(given)
        params = [None if info is None else next(given) for info in ctx.param_info]
        B, N, C, H, W, out_dim = ctx.shapes
        L = ctx.n_layers
        BLOCK_N, warps = _launch_cfg(backward=True)
        meta = dict(ctx.meta, BLOCK_N=BLOCK_N)
        CP, HP, OP = meta["CP"], meta["HP"], meta["OP"]
        dev = planes_cl.device
        nw0, nm = w0.shape[0], max(1, L - 2)
        n_prog = _cdiv(N, meta["BLOCK_N"]) * B
        P = max(1, min(n_prog, 64))  # partial slots: fewer atomic collisions, small sum after
        f32 = dict(device=dev, dtype=torch.float32)
        v_planes = torch.zeros(B, 3, H, W, C, **f32)
        v_w0 = torch.zeros(P, nw0, CP, HP, **f32)
        v_b0 = torch.zeros(P, HP, **f32)
        v_wm = torch.zeros(P, nm, HP, HP, **f32)
        v_bm = torch.zeros(P, nm, HP, **f32)
        v_wl = torch.zeros(P, HP, OP, **f32)
        v_bl = torch.zeros(P, OP, **f32)
        if n_prog > 0:
            grid = (_cdiv(N, meta["BLOCK_N"]), B)
            try:
                with _launch_guard(dev):
                    K.triplane_mlp_bwd_kernel[grid](planes_cl, pts, w0, b0, wm, bm, wl, bl, v_out.contiguous(),
                                                    v_planes, v_w0, v_b0, v_wm, v_bm, v_wl, v_bl,
                                                    N, H, W, C, out_dim, P, num_warps=warps, **meta)
            except Exception as e:  # noqa: BLE001 - only triton's OutOfResources is handled
                if type(e).__name__ != "OutOfResources":
                    raise
                _SMEM_FAILED.add(("bwd", planes_cl.dtype, CP, HP, BLOCK_N, warps, str(dev)))
                warnings.warn(f"triplane_mlp: the Triton backward cannot launch here ({e}); "
                              "computing this gradient with the reference", stacklevel=2)
                return _reference_backward(ctx, planes_cl, pts, params, v_out)
        # un-pad, sum the partial slots, back to [out, in] (nn.Linear layout) and param dtypes
        hidden = ctx.param_info[0][0][0]
        v_w0 = v_w0.sum(0)[:, :C, :hidden]                     # [nw0, C, hidden]
        gw = [v_w0.reshape(nw0 * C, hidden).t()]
        gb = [v_b0.sum(0)[:hidden]]
        v_wm, v_bm = v_wm.sum(0), v_bm.sum(0)
        for i in range(L - 2):
            gw.append(v_wm[i, :hidden, :hidden].t())
            gb.append(v_bm[i, :hidden])
        gw.append(v_wl.sum(0)[:hidden, :out_dim].t())
        gb.append(v_bl.sum(0)[:out_dim])
        grads = []
        for g, info, need in zip(gw + gb, ctx.param_info, ctx.needs_input_grad[5:]):
            grads.append(g.to(info[1]).contiguous() if (info is not None and need) else None)
        v_planes = v_planes.permute(0, 1, 4, 2, 3).to(planes_cl.dtype).contiguous()
        if not ctx.needs_input_grad[0]:
            v_planes = None
        return (v_planes, None, None, None, None, *grads)


def _reference_backward(ctx, planes_cl, pts, params, v_out):
    """The gradients of ``_TriplaneMLPTriton`` from the reference's autograd (launch fallback)."""
    L = ctx.n_layers
    needs = ctx.needs_input_grad
    planes = planes_cl.permute(0, 1, 4, 2, 3).detach().requires_grad_(needs[0])
    ps = [None if p is None else p.detach().requires_grad_(need) for p, need in zip(params, needs[5:])]
    with torch.enable_grad():
        out = _triplane_mlp_ref(planes, pts, ps[:L], ps[L:], *ctx.names)
        inputs = [planes] + ps
        wanted = [t for t in inputs if t is not None and t.requires_grad]
        got = iter(torch.autograd.grad(out, wanted, v_out, allow_unused=True)) if wanted else iter(())
    grads = [next(got) if (t is not None and t.requires_grad) else None for t in inputs]
    return (grads[0], None, None, None, None, *grads[1:])


def _triplane_mlp_triton(planes, points, weights, biases, aggregate="concat", activation="relu"):
    why = _triton_supports_mlp(weights, biases)
    if why is not None:
        warnings.warn(f"triplane_mlp: {why}; using the reference path", stacklevel=3)
        return _triplane_mlp_ref(planes, points, weights, biases, aggregate, activation)
    if planes.shape[2] > _MAX_CHANNELS:
        warnings.warn(f"triplane_mlp: {planes.shape[2]} channels > {_MAX_CHANNELS}; using the reference path",
                      stacklevel=3)
        return _triplane_mlp_ref(planes, points, weights, biases, aggregate, activation)
    for name, t in [("weights", w) for w in weights] + [("biases", b) for b in biases if b is not None]:
        if t.device != planes.device:
            raise ValueError(f"triplane_mlp: {name} on {t.device}, planes on {planes.device}")
    if not points.is_floating_point():
        raise ValueError(f"triplane_mlp: points must be floating point, got {points.dtype}")
    try:
        return _TriplaneMLPTriton.apply(planes, points, aggregate, activation, len(weights), *weights, *biases)
    except Exception as e:  # noqa: BLE001 - only triton's OutOfResources is handled: auto never fails on it
        if type(e).__name__ != "OutOfResources":
            raise
        block, warps = _launch_cfg(backward=False)
        _SMEM_FAILED.add(("fwd", planes.dtype, _pow2(planes.shape[2]), _pow2(weights[0].shape[0]), block, warps,
                          str(planes.device)))
        warnings.warn(f"triplane_mlp: the Triton kernel cannot launch here ({e}); using the reference path",
                      stacklevel=3)
        return _triplane_mlp_ref(planes, points, weights, biases, aggregate, activation)


_dispatch.register(OP, "triton", _triplane_mlp_triton, _triton_probe, prefer=_dispatch.triton_prefer)


# ---------------------------------------------------------------------------------------------
# C++ fused CPU path (csrc/triplane_mlp_cpu.cpp, ops lrm_fast::triplane_mlp_fwd / _bwd)
# ---------------------------------------------------------------------------------------------

_CPP_AGG = {"concat": 0, "sum": 1, "mean": 2}
_CPP_ACT = {name: a.code for name, a in HIDDEN.items()}


def _needs_grad(tensors) -> bool:
    return torch.is_grad_enabled() and any(getattr(t, "requires_grad", False) for t in tensors)


def _cpp_probe(planes, points=None, *_):
    ok, why = _ext.load_extension()
    if not ok:
        return False, why
    if planes.device.type != "cpu":
        return False, f"no {planes.device.type} kernel (the C++ field is CPU-only; CUDA uses triton)"
    for op in ("triplane_mlp_fwd", "triplane_mlp_bwd"):
        if not _ext.has_kernel(op, "CPU"):
            return False, f"lrm_fast._C was built without {op} (rebuild the extension)"
    if planes.dtype != torch.float32:
        return False, f"dtype {planes.dtype} not supported (float32 only)"
    if points is not None and getattr(points, "device", planes.device) != planes.device:
        return False, f"points on {points.device}, planes on {planes.device}"
    if points is not None and _needs_grad([points]):
        return False, "points require grad: the fused kernel does not differentiate the points"
    return True, "lrm_fast._C fused CPU field"


def _cpp_setup_context(ctx, inputs, output):
    planes, points, weights, biases, aggregate, activation = inputs
    # only the inputs: the backward recomputes features and activations block by block
    ctx.save_for_backward(planes, points, *weights, *biases)
    ctx.n_layers, ctx.codes = len(weights), (aggregate, activation)


def _cpp_backward(ctx, v_out):
    planes, points, *params = ctx.saved_tensors
    L = ctx.n_layers
    v_planes, v_w, v_b = torch.ops.lrm_fast.triplane_mlp_bwd(v_out, planes, points, params[:L], params[L:],
                                                               *ctx.codes)
    return v_planes, None, list(v_w), list(v_b), None, None


def _cpp_double_backward(ctx, *grads):
    raise RuntimeError("triplane_mlp: the cpp backend has no double backward (create_graph=True through its "
                       "gradients); use backend='reference' for higher-order gradients")


# fake kernels (torch.compile, opcheck) and the autograd formula of the C++ field, registered at
# import (no-ops where lrm_fast._C is not built)

@_ext.register_fake("triplane_mlp_fwd")
def _(planes, points, weights, biases, aggregate, activation):
    return planes.new_empty(planes.shape[0], points.shape[1], weights[-1].shape[0])


@_ext.register_fake("triplane_mlp_bwd")
def _(v_out, planes, points, weights, biases, aggregate, activation):
    return (planes.new_empty(planes.shape), [w.new_empty(w.shape) for w in weights],
            [b.new_empty(b.shape) for b in biases])


_ext.register_autograd("triplane_mlp_fwd", _cpp_backward, setup_context=_cpp_setup_context)
# create_graph=True backpropagates through the backward: say so instead of torch's silent
# "treat it as a constant" fallback
_ext.register_autograd("triplane_mlp_bwd", _cpp_double_backward, setup_context=lambda ctx, inputs, output: None)


def _triplane_mlp_cpp(planes, points, weights, biases, aggregate="concat", activation="relu"):
    for name, t in [("weights", w) for w in weights] + [("biases", b) for b in biases if b is not None]:
        if t.device != planes.device:
            raise ValueError(f"triplane_mlp: {name} on {t.device}, planes on {planes.device}")
        if t.dtype != planes.dtype:
            raise ValueError(f"triplane_mlp: {name} dtype {t.dtype}, planes {planes.dtype} (cpp backend)")
    if points.dtype != torch.float32:
        raise ValueError(f"triplane_mlp: points must be float32 for the cpp backend, got {points.dtype}")
    # a missing bias is a constant zero vector (no gradient); points are detached: no gradient
    # flows to them (the probe sends points that require grad to the reference)
    bs = [b if b is not None else planes.new_zeros(w.shape[0]) for w, b in zip(weights, biases)]
    return torch.ops.lrm_fast.triplane_mlp_fwd(planes, points.detach(), list(weights), bs, _CPP_AGG[aggregate],
                                                 _CPP_ACT[activation])


def _cpp_prefer(planes, points=None, *params):
    """auto only: with gradients and fewer than ~1 point per 64 plane values, the cpp backward's
    per-thread plane-gradient buffers (zeroed and summed) cost more than the reference's whole
    backward (measured on the 2-core dev CPU: small preset, 4096 points, 0.77x; base preset, 32768
    points, 1.76x). An explicit ``backend="cpp"`` still runs it."""
    if (points is not None and points.shape[0] * points.shape[1] * 64 < planes.numel()
            and _needs_grad([planes, *params])):
        return False, "gradients with few points for the plane size: the reference's backward is faster"
    return True, ""


_dispatch.register(OP, "cpp", _triplane_mlp_cpp, _cpp_probe, prefer=_cpp_prefer,
                   ext_ops=("triplane_mlp_fwd", "triplane_mlp_bwd"))
