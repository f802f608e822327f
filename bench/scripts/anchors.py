"""Time the anchors' own code next to lrm_fast, in the same run, same config, random weights.

    python -m bench.scripts.anchors --openlrm /path/to/OpenLRM [--preset small] [--resolution 64] [--grid 64]
    python -m bench.scripts.anchors --openlrm /tmp/OpenLRM --preset base --resolution 288 --grid 384 --repeat 1

Nothing is downloaded and nothing of theirs is copied here: the checkout given on the command line is
imported as it is, patched only in this process, at run time:

* ``torch.compile`` is replaced by the identity while their modules are imported (their
  ``forward_planes``, DINOv2 wrapper and ``OSGDecoder`` are decorated with it; compiling would
  time the compiler, and it needs a C toolchain on CPU);
* the DINOv2 backbone is built with ``pretrained=False`` (their wrapper hard-codes
  ``pretrained=True``, a download);
* ``XFORMERS_DISABLED=1`` while importing: their DINOv2 layers pick xformers whenever it imports,
  and xformers has no CPU kernel (their own fallback is plain attention, which is what a CPU runs);
* ``accelerate.logging.get_logger`` is stubbed with ``logging.getLogger`` when accelerate is not
  installed (it is their only use of accelerate in the model code).

Cases (each: median wall time of ``--repeat`` calls after one warm-up call, fp32, batch 1):
``image->triplane`` (their ``forward_planes`` vs our ``LRM.forward_planes``), ``one view`` at
``--resolution`` (their ``synthesizer`` vs our ``LRM.render``, same camera), ``mesh grid`` (their
``synthesizer.forward_grid`` vs our field queried densely on the same grid^3 points). Ratios =
their time / our time (> 1: lrm_fast is faster). ``--memory`` also measures peak RSS per case
(bench/lib/mem.py; a forked child, single-threaded, so it takes a while).

TripoSR (``--triposr PATH``): its own code from a checkout (``tsr/``), its released ``config.yaml``'s
facts (``TRIPOSR_RELEASED_CONFIG``; the ViT config it would fetch is ``facebook/dino-vitb16``'s, built
in), random weights from its own initialisers (seed 0), ``renderer.set_chunk_size(8192)`` (its
``run.py`` default), next to lrm_fast's ``triposr`` preset. Its settings, not OpenLRM's:
image -> triplane on a 512 px image (tokenizer + backbone + post-processor; its image preprocessing
is not timed on either side), one view at ``--triposr-resolution`` (256, ``run.py``'s renders; their
``renderer`` on ``get_spherical_cameras`` rays vs our render of the same camera) and the mesh grid
at ``--triposr-grid`` (256^3, its ``extract_mesh``: ``query_triplane`` on every grid vertex vs our
field). TripoSR pins ``transformers==4.35.0`` (and ``omegaconf``, ``einops``): give a folder that
holds them with ``--triposr-site`` unless this environment has them; its ``huggingface_hub`` is
swapped in only while TripoSR's modules import. ``rembg`` / ``torchmcubes`` (not used here) are
stubbed when missing.

Fitted fields (``--fitted``): the cases that depend on the field also run on the fitted base field
(``bench/lib/fitted_field.py``: a trained-like field with empty space and a surface; random weights
have neither). Its planes and MLP are loaded into OpenLRM's own ``TriplaneSynthesizer`` (base: 48
channels, 48 + 48 samples; the field MLP maps one to one, ``field.net.*`` ->
``synthesizer.decoder.net.*``, the planes are the same tensor; ``tests/test_anchors.py`` checks
that OpenLRM's code then renders what ours renders with ``exact=True``). lrm_fast runs its defaults:
the one view skips empty space (the occupancy grid is built inside every timed call, as a fresh
reconstruction's first render does); the mesh grid is ``lrm_fast.mesh.density_grid`` with the
default of ``extract_mesh`` (coarse-to-fine or dense, the ``case`` column says which). With
``--triposr``, the same two cases on the fitted TripoSR field (``preset="triposr"``) in TripoSR's own
renderer and ``query_triplane`` (``load_fitted_into_triposr``: a copy of its ``NeRFMLP`` holding the
field, plane 2 transposed back; ``tests/test_anchors.py`` checks that TripoSR's code then renders what
ours renders exactly), at ``--triposr-resolution`` / ``--triposr-grid``; ours skips with TripoSR's sampler.

Floor (``image->triplane`` rows): image -> triplane is GEMMs and attention, the same arithmetic on
both sides, so no fp32 code can run it faster than its FLOPs at this CPU's matrix-multiply rate.
Each such row also gets ``tflop`` (our forward, counted by ``torch.utils.flop_counter`` with SDPA
added), ``gemm_gflops`` (the best of 3 ``torch.mm`` of the decoder's MLP shape, measured in the same
run), ``floor_s`` = tflop / gemm rate and ``max_ratio`` = their time / floor_s: the most any fp32
implementation could reach against them on this machine.

Compiled reference (every case; ``--no-compile`` leaves it out): what a user would try instead of
lrm_fast is ``torch.compile`` on the plain model. Each row also times a copy of our model on
``backend="reference"`` (the plain-PyTorch spec, same weights) compiled as ``bench/lib/compiled.py``
compiles it (``--compile-mode``, default ``max-autotune-no-cudagraphs``; ``--compile-backend``), on what
their code computes (every sample of the view, the field on every grid point, also in the fitted rows):
``compiled_s`` after compilation, ``compile_s`` (paid once per shape and process), ``ratio_compiled`` =
compiled / ours and ``compiled_max_abs``, its output against the uncompiled reference's. A failing
compilation is recorded in the row (``compiled_error``, one line) and the run goes on.

``--only TEXT`` times only the cases whose name contains TEXT (e.g. ``--only triplane``). ``--json FILE``
writes the rows (and the table, ``.md``); ``--readme README.md`` replaces the README's anchors section with
this run's table and command; ``--from-json FILE --readme README.md`` does it from a saved run.

Warm-up: a case whose first call takes more than ``WARMUP_LIMIT_S`` counts that call as a sample
(a second warm-up call of a minute would only double the run).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import logging
import os
import shlex
import statistics
import sys
import time
import types

import torch

from bench.lib.compiled import ANCHORS_MODE

# Our presets -> OpenLRM ModelLRM kwargs (its configs/*.yaml and model cards; see lrm_fast/config.py).
OPENLRM_ARGS = {
    "small": dict(transformer_dim=512, transformer_layers=12, transformer_heads=8, triplane_dim=32,
                  encoder_model_name="dinov2_vits14_reg", encoder_feat_dim=384, rendering_samples_per_ray=96),
    "base": dict(transformer_dim=768, transformer_layers=12, transformer_heads=12, triplane_dim=48,
                 encoder_model_name="dinov2_vitb14_reg", encoder_feat_dim=768, rendering_samples_per_ray=96),
    "large": dict(transformer_dim=1024, transformer_layers=16, transformer_heads=16, triplane_dim=80,
                  encoder_model_name="dinov2_vitb14_reg", encoder_feat_dim=768, rendering_samples_per_ray=128),
}


@contextlib.contextmanager
def _patched_import_env(checkout: str):
    """sys.path + identity torch.compile + accelerate stub, only while their modules import."""
    if not os.path.isdir(os.path.join(checkout, "openlrm")):
        raise FileNotFoundError(f"{checkout}: not an OpenLRM checkout (no openlrm/ folder)")
    saved_compile, added = torch.compile, []

    def no_compile(fn=None, *args, **kwargs):
        return fn if fn is not None else (lambda f: f)

    torch.compile = no_compile
    saved_xf = os.environ.get("XFORMERS_DISABLED")
    if not torch.cuda.is_available():
        os.environ["XFORMERS_DISABLED"] = "1"
    sys.path.insert(0, os.path.abspath(checkout))
    try:
        importlib.import_module("accelerate.logging")
    except ImportError:
        acc, acc_log = types.ModuleType("accelerate"), types.ModuleType("accelerate.logging")
        acc_log.get_logger = logging.getLogger
        acc.logging = acc_log
        sys.modules.update({"accelerate": acc, "accelerate.logging": acc_log})
        added += ["accelerate", "accelerate.logging"]
    try:
        yield
    finally:
        torch.compile = saved_compile
        if saved_xf is None:
            os.environ.pop("XFORMERS_DISABLED", None)
        sys.path.remove(os.path.abspath(checkout))
        for name in added:  # their modules hold the logger already; a stub left behind (no __spec__)
            sys.modules.pop(name, None)  # breaks importlib.util.find_spec in later imports (TripoSR's transformers)


def build_openlrm(checkout: str, preset: str):
    if preset not in OPENLRM_ARGS:
        raise ValueError(f"no OpenLRM config for preset {preset!r}; choose one of {sorted(OPENLRM_ARGS)}")
    with _patched_import_env(checkout):
        modeling = importlib.import_module("openlrm.models.modeling_lrm")
        wrapper = importlib.import_module("openlrm.models.encoders.dinov2_wrapper")
        original = wrapper.Dinov2Wrapper._build_dinov2

        def build_random(model_name, modulation_dim=None, pretrained=True):
            return original(model_name, modulation_dim=modulation_dim, pretrained=False)

        wrapper.Dinov2Wrapper._build_dinov2 = staticmethod(build_random)
        try:
            torch.manual_seed(0)
            model = modeling.ModelLRM(camera_embed_dim=1024, triplane_low_res=32, triplane_high_res=64,
                                      encoder_freeze=False, encoder_type="dinov2", **OPENLRM_ARGS[preset])
        finally:
            wrapper.Dinov2Wrapper._build_dinov2 = staticmethod(original)
    return model.eval()


WARMUP_LIMIT_S = 10.0


def _time(fn, repeat: int) -> float:
    """Median wall time of ``repeat`` calls after one warm-up call (allocator, lazy init); a first
    call over ``WARMUP_LIMIT_S`` counts as the first sample instead."""
    with torch.inference_mode():
        t = time.perf_counter()
        fn()
        first = time.perf_counter() - t
        ts = [first] if first > WARMUP_LIMIT_S else []
        while len(ts) < max(1, repeat):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _grid_points(grid: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    ax = torch.linspace(lo, hi, grid)
    return torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(1, -1, 3)


ONLY: str | None = None   # main's --only: time only the cases whose name contains it


def _sdpa_flops(q, k, v, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one CPU SDPA call (flop_counter has no formula for the CPU flash kernel): Q K^T and P V."""
    B, H, L, d = q
    return 2 * B * H * L * k[2] * d + 2 * B * H * L * k[2] * v[3]


def flop_floor(model, *inputs) -> dict:
    """The fp32 floor of ``model.forward_planes(*inputs)`` on this CPU: its FLOPs (matmuls, convolutions,
    attention) over the best ``torch.mm`` rate measured now on the decoder's MLP shape."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping={
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}) as fc:
        model.requires_grad_(False).forward_planes(*inputs)   # (flop_counter's module hooks need no grads)
    D = model.cfg.decoder.dim
    L = 3 * model.cfg.triplane.low_res ** 2
    a, b = torch.randn(L, D), torch.randn(D, int(D * model.cfg.decoder.mlp_ratio))
    out = torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t)
    tflop = fc.get_total_flops() / 1e12
    gemm = 2 * a.shape[0] * a.shape[1] * b.shape[1] / best / 1e9
    return {"tflop": tflop, "gemm_gflops": gemm, "floor_s": tflop * 1e3 / gemm}


def _kwargs_text(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "inductor's default mode"


GRID_CHUNK = 2 ** 20   # points per field query of a mesh grid (ours and the compiled reference)


def _grid_call(planes: torch.Tensor, pts: torch.Tensor):
    """``call(query)``: ``query(planes, chunk)`` over every point of ``pts [1, N, 3]`` in chunks of
    ``GRID_CHUNK`` (the dense field query of a mesh grid); returns the first chunk's output."""
    def call(query):
        first = None
        for s in range(0, pts.shape[1], GRID_CHUNK):
            out = query(planes, pts[:, s:s + GRID_CHUNK])
            first = out if first is None else first
        return first
    return call


def _reference_twin(model):
    """A copy of ``model`` on the plain-PyTorch spec (``backend="reference"``), the weights the same."""
    return copy.deepcopy(model).set_backend("reference")


def our_cases(ours, image: torch.Tensor, camera, c2w, K, resolution: int, grid: int, pts: torch.Tensor) -> dict:
    """Our side of the three cases, ``{name: (our call, peer)}``: our ``forward_planes``, ``render`` of
    one view and the dense field query of the grid (``pts``), each with its compiled-reference peer
    ``(reference model, entry, call(entry))`` for ``compiled_peer``."""
    with torch.inference_mode():
        planes = ours.forward_planes(image, camera)
    ref = _reference_twin(ours)
    grid_call = _grid_call(planes, pts)
    return {
        "image->triplane": (lambda: ours.forward_planes(image, camera), (ref, "planes", lambda f: f(image, camera))),
        f"one view {resolution}x{resolution}": (lambda: ours.render(planes, c2w, K, resolution),
                                                (ref, "render", lambda f: f(planes, c2w, K, resolution))),
        f"mesh grid {grid}^3": (lambda: grid_call(ours.field.query), (ref, "query", grid_call)),
    }


def compiled_peer(model, what: str, call, repeat: int, compile_kwargs: dict) -> dict:
    """The compiled-reference columns of a row: ``torch.compile`` of ``model``'s entry ``what``
    (``bench/lib/compiled.py``) run through ``call``. ``compile_s``: building it and its first calls,
    less the steady time of the calls made in them (paid once per shape and process);
    ``compiled_s``: ``_time`` after that; ``compiled_max_abs``: max |compiled - uncompiled| of one
    call's output. Any failure (no C++ compiler, an inductor error) becomes ``compiled_error``, one line."""
    from bench.lib.compiled import compile_reference, max_abs_diff, reference_entry
    from bench.lib.format import one_line

    try:
        with torch.inference_mode():
            t = time.perf_counter()
            fn, calls = compile_reference(model, what, **compile_kwargs)
            got = call(fn)
            first = time.perf_counter() - t
            want = call(reference_entry(model, what))
            err = max_abs_diff(got, want)
        del got, want
        steady = _time(lambda: call(fn), repeat)
    except Exception as e:  # noqa: BLE001 - recorded in the row; the run goes on
        return {"compiled_error": one_line(e)}
    return {"compiled_s": steady, "compile_s": max(first - (calls + 1) * steady, 0.0), "compiled_max_abs": err}


def _run_cases(anchor: str, preset: str, cases: dict, repeat: int, backend: str, memory: bool,
               floor=None, compile_kwargs: dict | None = None) -> list[dict]:
    """Time each case's two sides, ``{name: (their call, our call[, peer])}``; ``floor`` (a no-argument
    callable returning ``flop_floor``'s dict) adds the fp32 floor to the ``image->triplane`` row;
    ``compile_kwargs`` (None: none) adds the compiled reference (``compiled_peer``) of each case with a peer."""
    from bench.lib.mem import peak_memory_mb

    rows = []
    for name, (t_fn, o_fn, *peer) in cases.items():
        if ONLY and ONLY not in name:
            continue
        print(f"  timing {anchor} {name} ...", flush=True)
        row = {"anchor": anchor, "preset": preset, "case": name, "theirs_s": _time(t_fn, repeat),
               "ours_s": _time(o_fn, repeat), "backend": backend}
        if memory:
            with torch.inference_mode():
                row["theirs_mb"], row["ours_mb"] = peak_memory_mb(t_fn), peak_memory_mb(o_fn)
        row["ratio"] = row["theirs_s"] / row["ours_s"]
        print(f"    {row['theirs_s']:.3f} s vs {row['ours_s']:.3f} s: {row['ratio']:.2f}x", flush=True)
        if compile_kwargs is not None and peer and peer[0] is not None:
            print(f"  compiling the reference ({_kwargs_text(compile_kwargs)}) ...", flush=True)
            row["compiled_with"] = _kwargs_text(compile_kwargs)
            row.update(compiled_peer(*peer[0], repeat, compile_kwargs))
            if "compiled_s" in row:
                row["ratio_compiled"] = row["compiled_s"] / row["ours_s"]
                print(f"    compiled reference {row['compiled_s']:.3f} s (compile {row['compile_s']:.1f} s, "
                      f"max abs diff {row['compiled_max_abs']:.2g}): compiled / ours {row['ratio_compiled']:.2f}x",
                      flush=True)
            else:
                print(f"    compiled reference failed: {row['compiled_error']}", flush=True)
        if floor and name == "image->triplane":
            row.update(floor())
            row["max_ratio"] = row["theirs_s"] / row["floor_s"]
            print(f"    floor: {row['tflop']:.2f} TFLOP at {row['gemm_gflops']:.0f} GFLOP/s (torch.mm, now) = "
                  f"{row['floor_s']:.2f} s: no fp32 code can pass {row['max_ratio']:.2f}x here", flush=True)
        rows.append(row)
    return rows


def _openlrm_camera(resolution: int):
    """(our c2w [1, 1, 4, 4], our K [1, 1, 4], OpenLRM's 25-number render camera [1, 1, 25]) of one view."""
    from lrm_fast.model.camera import default_intrinsics, orbit_cameras

    c2w = orbit_cameras([30.0], 20.0)[None]                        # [1, 1, 4, 4], OpenGL c2w (same as theirs)
    K = default_intrinsics().expand(1, 1, 4)
    fx, fy, cx, cy = K[0, 0].tolist()
    std_cam = torch.cat([c2w.reshape(1, 1, 16),
                         torch.tensor([fx, 0, cx, 0, fy, cy, 0, 0, 1.0]).reshape(1, 1, 9)], -1)
    return c2w, K, std_cam


def openlrm_synthesizer(checkout: str, triplane_dim: int = 48, samples_per_ray: int = 96):
    """OpenLRM's own ``TriplaneSynthesizer`` (renderer + OSG decoder) alone, its base sizes by default."""
    with _patched_import_env(checkout):
        synth = importlib.import_module("openlrm.models.rendering.synthesizer")
        return synth.TriplaneSynthesizer(triplane_dim=triplane_dim, samples_per_ray=samples_per_ray).eval()


def load_fitted_into_openlrm(checkout: str):
    """(planes, OpenLRM synthesizer holding the fitted field, our fitted model): the fitted base field
    (bench/lib/fitted_field.py) in OpenLRM's own renderer. The mapping is the inverse of our OpenLRM
    converter's (``synthesizer.decoder.net.*`` -> ``field.net.*``, planes as they are)."""
    from bench.lib.fitted_field import load_fitted_field

    planes, model = load_fitted_field()
    rc = model.cfg.render
    synth = openlrm_synthesizer(checkout, model.cfg.triplane.channels, rc.samples_per_ray)
    synth.decoder.net.load_state_dict(model.field.net.state_dict())
    return planes, synth, model


@contextlib.contextmanager
def openlrm_deterministic(synth):
    """OpenLRM's ImportanceRenderer without its inference-time randomness (zero stratified jitter, its
    own ``sample_pdf(det=True)``; ``tools/parity/_common.py``), only inside the block: what our
    renderer computes."""
    from tools.parity._common import deterministic_sampling

    undo = deterministic_sampling(type(synth.renderer))
    try:
        yield synth
    finally:
        undo()


def render_default(model, planes, c2w, K, resolution: int, exact: bool | None = None):
    """Our render with lrm_fast's defaults: a fresh reconstruction's first ``render`` (the occupancy grid
    built in the call where ``Reconstruction._grid_for_render``'s rule says skipping pays, else the exact
    render; ``exact=False`` skips whatever the size, as the tests' small views need)."""
    from lrm_fast.api import Reconstruction

    return Reconstruction(model, planes).render(cameras=(c2w, K), resolution=resolution, exact=exact)


def fitted_cases(checkout: str, resolution: int, grid: int) -> dict:
    """The field-dependent cases on the fitted base field: OpenLRM's synthesizer vs our defaults."""
    from lrm_fast.mesh import COARSE_TO_FINE_DEFAULT, field_density_grid

    planes, synth, model = load_fitted_into_openlrm(checkout)
    c2w, K, std_cam = _openlrm_camera(resolution)
    rc = model.cfg.render
    how = "coarse-to-fine" if COARSE_TO_FINE_DEFAULT else "dense"
    view_peer, grid_peer = _fitted_peers(model, planes, c2w, K, resolution, _grid_points(grid))
    return {
        f"one view {resolution}x{resolution}, fitted field (ours: skipping, grid built in the call)": (
            lambda: synth(planes, std_cam, torch.zeros(1, 1, 2), torch.full((1, 1, 1), float(resolution)),
                          torch.ones(1, 1, 1), resolution),
            lambda: render_default(model, planes, c2w, K, resolution), view_peer),
        f"mesh grid {grid}^3, fitted field (ours: {how} density)": (
            lambda: synth.forward_grid(planes, grid),
            lambda: field_density_grid(model, planes, grid, rc.mesh_threshold, COARSE_TO_FINE_DEFAULT), grid_peer),
    }


def _fitted_peers(model, planes, c2w, K, resolution: int, pts: torch.Tensor):
    """The compiled-reference peers of the fitted cases: what their code computes there, every sample of
    the view (the exact render, no skipping) and the field on every grid point (dense)."""
    ref = _reference_twin(model)
    return (ref, "render", lambda f: f(planes, c2w, K, resolution)), (ref, "query", _grid_call(planes, pts))


def compare_openlrm(checkout: str, preset: str, resolution: int, grid: int, repeat: int, backend: str,
                    memory: bool, fitted: bool = False, compile_kwargs: dict | None = None) -> list[dict]:
    from lrm_fast.config import LRMConfig
    from lrm_fast.model.lrm import LRM

    theirs = build_openlrm(checkout, preset)
    torch.manual_seed(0)
    ours = LRM(LRMConfig.preset(preset), backend=backend).eval()
    S = ours.cfg.encoder.image_size
    image = torch.rand(1, 3, S, S)
    source = ours.default_source_camera(1)
    c2w, K, std_cam = _openlrm_camera(resolution)
    with torch.inference_mode():
        planes_t = theirs.forward_planes(image, source)
    theirs_calls = [
        lambda: theirs.forward_planes(image, source),
        lambda: theirs.synthesizer(planes_t, std_cam, torch.zeros(1, 1, 2), torch.full((1, 1, 1), float(resolution)),
                                   torch.ones(1, 1, 1), resolution),
        lambda: theirs.synthesizer.forward_grid(planes_t, grid)]
    ours_side = our_cases(ours, image, source, c2w, K, resolution, grid, _grid_points(grid))
    cases = {name: (t, *o) for (name, o), t in zip(ours_side.items(), theirs_calls)}
    if fitted:
        cases.update(fitted_cases(checkout, resolution, grid))
    return _run_cases("OpenLRM", preset, cases, repeat, backend, memory, lambda: flop_floor(ours, image, source),
                      compile_kwargs)


# stabilityai/TripoSR's config.yaml (the released checkpoint's): its keys and values, nothing else
TRIPOSR_RELEASED_CONFIG = {
    "cond_image_size": 512,
    "image_tokenizer_cls": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "image_tokenizer": {"pretrained_model_name_or_path": "facebook/dino-vitb16"},
    "tokenizer_cls": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "tokenizer": {"plane_size": 32, "num_channels": 1024},
    "backbone_cls": "tsr.models.transformer.transformer_1d.Transformer1D",
    "backbone": {"in_channels": "${tokenizer.num_channels}", "num_attention_heads": 16, "attention_head_dim": 64,
                 "num_layers": 16, "cross_attention_dim": 768},
    "post_processor_cls": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "post_processor": {"in_channels": 1024, "out_channels": 40},
    "decoder_cls": "tsr.models.network_utils.NeRFMLP",
    "decoder": {"in_channels": 120, "n_neurons": 64, "n_hidden_layers": 9, "activation": "silu"},
    "renderer_cls": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
    "renderer": {"radius": 0.87, "feature_reduction": "concat", "density_activation": "exp", "density_bias": -1.0,
                 "num_samples_per_ray": 128},
}
TRIPOSR_CHUNK = 8192   # its run.py's --chunk-size default


def _is_hub(name: str) -> bool:
    return name == "huggingface_hub" or name.startswith("huggingface_hub.")


def build_triposr(checkout: str, site: str | None = None):
    """TripoSR's ``TSR`` from its released config's facts, random weights (its own initialisers, seed 0).

    Imports ``tsr`` from ``checkout`` with ``site`` (transformers 4.35, omegaconf, einops and the
    huggingface_hub they go with) first on ``sys.path``; the ``huggingface_hub`` modules already loaded
    here are set aside while TripoSR's imports run and put back after (TripoSR keeps the version it
    imported). The ViT config it would download is written to a temporary folder."""
    import tempfile

    if not os.path.isdir(os.path.join(checkout, "tsr")):
        raise FileNotFoundError(f"{checkout}: not a TripoSR checkout (no tsr/ folder)")
    if site is not None and not os.path.isdir(site):
        raise FileNotFoundError(f"--triposr-site {site}: no such folder")
    from lrm_fast.io.checkpoint import DINO_VITB16_CONFIG

    saved = {k: v for k, v in sys.modules.items() if _is_hub(k)}
    paths = [os.path.abspath(checkout)] + ([os.path.abspath(site)] if site else [])
    stubbed = []
    if site:
        for k in saved:
            del sys.modules[k]
    sys.path[:0] = paths
    try:
        for name in ("rembg", "torchmcubes"):   # imported at module level, used only for features not timed
            try:
                importlib.import_module(name)
            except ImportError:
                mod = types.ModuleType(name)

                def _unavailable(*a, _n=name, **k):
                    raise RuntimeError(f"{_n} is stubbed in bench.scripts.anchors")
                mod.remove = mod.new_session = mod.marching_cubes = _unavailable
                sys.modules[name] = mod
                stubbed.append(name)
        try:
            tok_mod = importlib.import_module("tsr.models.tokenizers.image")
            system = importlib.import_module("tsr.system")
            omegaconf = importlib.import_module("omegaconf")
            transformers = importlib.import_module("transformers")
        except ImportError as e:
            raise ImportError(f"TripoSR's code needs transformers==4.35.0, omegaconf and einops ({e}); "
                              "give a folder holding them with --triposr-site") from e
        vit_dir = tempfile.mkdtemp(prefix="triposr-vit-")
        transformers.ViTConfig(**DINO_VITB16_CONFIG).save_pretrained(vit_dir)
        hub = tok_mod.hf_hub_download
        tok_mod.hf_hub_download = lambda repo_id, filename, **kw: os.path.join(vit_dir, filename)
        try:
            cfg = omegaconf.OmegaConf.create(TRIPOSR_RELEASED_CONFIG)
            omegaconf.OmegaConf.resolve(cfg)
            torch.manual_seed(0)
            model = system.TSR(cfg).eval()
        finally:
            tok_mod.hf_hub_download = hub
        model.renderer.set_chunk_size(TRIPOSR_CHUNK)
        utils = importlib.import_module("tsr.utils")
        einops = importlib.import_module("einops")
    finally:
        for p in paths:
            sys.path.remove(p)
        if site:
            for k in [k for k in sys.modules if _is_hub(k)]:
                del sys.modules[k]
            sys.modules.update(saved)
    return model, utils, einops


def triposr_planes(theirs, einops, image: torch.Tensor) -> torch.Tensor:
    """TripoSR's own image -> triplane for ``image [1, 3, S, S]`` (its ``TSR.forward`` without the image
    preprocessing): tokenizer, backbone, post-processor."""
    tok = theirs.image_tokenizer(image[:, None])
    tok = einops.rearrange(tok, "B Nv C Nt -> B (Nv Nt) C", Nv=1)
    return theirs.post_processor(theirs.tokenizer.detokenize(
        theirs.backbone(theirs.tokenizer(1), encoder_hidden_states=tok)))


def triposr_cameras(tsr_utils, cfg, resolution: int, n_views: int = 1, elevation: float = 0.0):
    """TripoSR's ``run.py`` renders (``get_spherical_cameras(n, elevation, 1.9, fov 40)``: view ``i`` at
    azimuth ``360 i / n`` from +x) as its rays ``[n, H, W, 3]`` x 2 (None without ``tsr_utils``) and
    ours (c2w ``[1, n, 4, 4]``, K): our azimuth ``front_azimuth`` (90) is its +x."""
    from lrm_fast.cameras import default_intrinsics, orbit_cameras

    cam = cfg.camera
    rays_o = rays_d = None
    if tsr_utils is not None:
        rays_o, rays_d = tsr_utils.get_spherical_cameras(n_views, elevation, cam.source_distance, 40.0, resolution,
                                                         resolution)
    az = [cam.front_azimuth + 360.0 * i / n_views for i in range(n_views)]
    c2w = orbit_cameras(az, elevation, cam.source_distance)[None]
    return rays_o, rays_d, c2w, default_intrinsics(cam.source_focal).expand(1, n_views, 4)


def load_fitted_into_triposr(theirs, model):
    """TripoSR's decoder (a copy of ``theirs.decoder``, ``NeRFMLP``) holding our fitted TripoSR field
    (bench/lib/fitted_field.py, ``model``), and a function giving TripoSR's planes ``[3, C, H, W]`` of
    ours: the inverse of our TripoSR converter (``field.net.*`` -> ``decoder.layers.*``; plane 2
    transposed back, TripoSR samples it at (y, z), ours at (z, y): model/triplane.py)."""
    import copy

    dec = copy.deepcopy(theirs.decoder)
    dec.layers.load_state_dict(model.field.net.state_dict())

    def planes_of(planes):
        return torch.stack([planes[0, 0], planes[0, 1], planes[0, 2].transpose(-1, -2)])

    return dec.eval(), planes_of


def triposr_fitted_cases(theirs, tsr_utils, resolution: int, grid: int) -> dict:
    """The field-dependent cases on the fitted TripoSR field: TripoSR's renderer and grid query vs our
    defaults (the one view skips empty space, its grid built in the call; the mesh grid as ``extract_mesh``
    queries it)."""
    from bench.lib.fitted_field import load_fitted_field
    from lrm_fast.mesh import COARSE_TO_FINE_DEFAULT, field_density_grid

    planes, model = load_fitted_field(preset="triposr")
    dec, planes_of = load_fitted_into_triposr(theirs, model)
    planes_t = planes_of(planes)
    rays_o, rays_d, c2w, K = triposr_cameras(tsr_utils, model.cfg, resolution)
    rc = model.cfg.render
    pts = _grid_points(grid, rc.box_min, rc.box_max)
    how = "coarse-to-fine" if COARSE_TO_FINE_DEFAULT else "dense"
    view_peer, grid_peer = _fitted_peers(model, planes, c2w, K, resolution, pts)
    return {
        f"one view {resolution}x{resolution}, fitted field (ours: skipping, grid built in the call)": (
            lambda: theirs.renderer(dec, planes_t, rays_o[0], rays_d[0]),
            lambda: render_default(model, planes, c2w, K, resolution), view_peer),
        f"mesh grid {grid}^3, fitted field (ours: {how} density)": (
            lambda: theirs.renderer.query_triplane(dec, pts[0], planes_t)["density_act"],
            lambda: field_density_grid(model, planes, grid, rc.mesh_threshold, COARSE_TO_FINE_DEFAULT), grid_peer),
    }


def compare_triposr(checkout: str, site: str | None, resolution: int, grid: int, repeat: int, backend: str,
                    memory: bool, fitted: bool = False, compile_kwargs: dict | None = None) -> list[dict]:
    from lrm_fast.config import LRMConfig
    from lrm_fast.model.lrm import LRM

    theirs, tsr_utils, einops = build_triposr(checkout, site)
    torch.manual_seed(0)
    ours = LRM(LRMConfig.preset("triposr"), backend=backend).eval()
    S = ours.cfg.encoder.image_size
    image = torch.rand(1, 3, S, S)

    def their_planes():
        return triposr_planes(theirs, einops, image)

    with torch.inference_mode():
        planes_t = their_planes()
    rays_o, rays_d, c2w, K = triposr_cameras(tsr_utils, ours.cfg, resolution)
    rc = ours.cfg.render
    pts = _grid_points(grid, rc.box_min, rc.box_max)

    def their_grid():   # its extract_mesh's query: every grid vertex through query_triplane
        theirs.renderer.query_triplane(theirs.decoder, pts[0], planes_t[0])["density_act"]

    theirs_calls = [their_planes, lambda: theirs.renderer(theirs.decoder, planes_t[0], rays_o[0], rays_d[0]),
                    their_grid]
    ours_side = our_cases(ours, image, None, c2w, K, resolution, grid, pts)
    cases = {name: (t, *o) for (name, o), t in zip(ours_side.items(), theirs_calls)}
    if fitted:
        cases.update(triposr_fitted_cases(theirs, tsr_utils, resolution, grid))
    return _run_cases("TripoSR", "triposr", cases, repeat, backend, memory, lambda: flop_floor(ours, image),
                      compile_kwargs)


def _compiled_cells(r: dict) -> str:
    if "compiled_s" in r:
        return (f" {r['compiled_s']:.3f} s | {r['compile_s']:.1f} s | {r['ratio_compiled']:.2f}x | "
                f"{r['compiled_max_abs']:.1e} |")
    return " error (below) | | | |" if "compiled_error" in r else " - | | | |"


def table(rows: list[dict]) -> str:
    mem = any("theirs_mb" in r for r in rows)
    comp = any("compiled_s" in r or "compiled_error" in r for r in rows)
    lines = ["| anchor | preset | case | theirs | lrm_fast | ratio (theirs / ours) |" + (" theirs peak | our peak |" if mem else "")
             + (" compiled reference | its compile, once per shape | ratio (compiled / ours) | compiled vs reference, "
                "max abs diff |" if comp else ""),
             "|---|---|---|---:|---:|---:|" + ("---:|---:|" if mem else "") + ("---:|---:|---:|---:|" if comp else "")]
    for r in rows:
        line = (f"| {r['anchor']} | {r['preset']} | {r['case']} | {r['theirs_s']:.3f} s | {r['ours_s']:.3f} s | "
                f"{r['ratio']:.2f}x |")
        if mem:
            line += f" {r.get('theirs_mb', -1) / 1024:.2f} GiB | {r.get('ours_mb', -1) / 1024:.2f} GiB |"
        if comp:
            line += _compiled_cells(r)
        lines.append(line)
    with_ = next((r["compiled_with"] for r in rows if "compiled_with" in r), None)
    if comp:
        lines.append(f"\nCompiled reference: `torch.compile` ({with_}) of lrm_fast's plain-PyTorch reference "
                     "(`backend=\"reference\"`, the same weights), computing what their code computes (every sample "
                     "of the view, the field on every grid point; `bench/lib/compiled.py`). Its time is after "
                     "compilation; the compile column is paid once per input shape and process (after the first "
                     "calls' run time is taken out); ratio > 1: lrm_fast is faster than the compiled reference.")
    errors = [f"- compiled reference of {r['anchor']} {r['case']}: {r['compiled_error']}"
              for r in rows if "compiled_error" in r]
    lines += [""] + errors if errors else []
    lines += [f"\n{r['anchor']} {r['preset']} image -> triplane floor: {r['tflop']:.2f} TFLOP at {r['gemm_gflops']:.0f} "
              f"GFLOP/s (torch.mm, same run) = {r['floor_s']:.2f} s; no fp32 code passes {r['max_ratio']:.2f}x here"
              for r in rows if "floor_s" in r]
    return "\n".join(lines)


def summary(meta: dict, rows: list[dict], source: str | None = None) -> str:
    """The run's description (machine, command, the JSON it wrote) and its table: the ``.md`` next to the
    JSON and the README's anchors section."""
    src = f"; rows: `{source}`" if source else ""
    return (f"{meta['cpu_count']} cores ({meta['machine']}), torch {meta['torch']} ({meta['torch_threads']} threads), "
            f"fp32, random weights (rows marked fitted field: `bench/lib/fitted_field.py`), lrm_fast backend "
            f"{meta['args']['backend']!r}, {meta['when_utc']} UTC; `{meta['command']}`{src}\n\n" + table(rows) + "\n")


def write_readme(readme: str, meta: dict, rows: list[dict], source: str | None) -> None:
    """Replace the README's anchors section (between ``ANCHORS_START`` and ``ANCHORS_END``) with this run."""
    from bench.lib.readme import ANCHORS_END, ANCHORS_START, update_readme

    update_readme(readme, "**Side by side with the originals' own code** (`bench/scripts/anchors.py`): "
                  + summary(meta, rows, source), ANCHORS_START, ANCHORS_END)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scripts.anchors", description=__doc__.split("\n\n")[0])
    p.add_argument("--openlrm", help="path to an OpenLRM checkout (github.com/3DTopia/OpenLRM)")
    p.add_argument("--triposr", help="path to a TripoSR checkout (github.com/VAST-AI-Research/TripoSR)")
    p.add_argument("--triposr-site", help="folder with TripoSR's pinned packages (transformers 4.35.0, omegaconf, "
                   "einops) when this environment lacks them")
    p.add_argument("--triposr-resolution", type=int, default=256, help="TripoSR view size (its run.py: 256)")
    p.add_argument("--triposr-grid", type=int, default=256, help="TripoSR mesh grid (its run.py: 256)")
    p.add_argument("--fitted", action="store_true", help="also the field-dependent cases on the fitted fields "
                   "(bench/lib/fitted_field.py: base in OpenLRM's code, triposr in TripoSR's)")
    p.add_argument("--preset", default="small", choices=sorted(OPENLRM_ARGS))
    p.add_argument("--resolution", type=int, default=64, help="view size (OpenLRM's demo: 288 base, 192 small)")
    p.add_argument("--grid", type=int, default=64, help="mesh grid size (OpenLRM's default: 384)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--backend", default="fast", help="lrm_fast backend (fast | reference)")
    p.add_argument("--memory", action="store_true", help="also peak memory per case (slow)")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled-reference columns (torch.compile "
                   "of our reference: minutes of compilation per case)")
    p.add_argument("--compile-mode", default=ANCHORS_MODE,
                   help="torch.compile mode of the compiled reference (default: %(default)s; 'default': inductor's)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the compiled reference ('eager': the plumbing, no code generation)")
    p.add_argument("--json", help="write the rows to this JSON file (and the table next to it, .md)")
    p.add_argument("--readme", help="replace this README's anchors section with the table of this run")
    p.add_argument("--from-json", help="no timing: the table of a JSON this script wrote (with --readme: into it)")
    p.add_argument("--only", help="time only the cases whose name contains this text")
    a = p.parse_args(argv)
    global ONLY
    ONLY = a.only
    if a.from_json:
        try:
            with open(a.from_json) as f:
                done = json.load(f)
            meta, rows = done["meta"], done["rows"]
            meta.setdefault("command", "python -m bench.scripts.anchors " + " ".join(   # JSONs from before
                f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")          # the command was kept
                for k, v in meta["args"].items() if v not in (None, False)))
            if a.readme:
                write_readme(a.readme, meta, rows, a.from_json)
        except (OSError, ValueError, KeyError) as e:
            print(f"bench.scripts.anchors: error: --from-json {a.from_json}: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        print(table(rows))
        return 0
    if not a.openlrm and not a.triposr:
        p.error("give --openlrm PATH and/or --triposr PATH (local checkouts; nothing is downloaded)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    compile_kwargs = None if a.no_compile else {
        k: v for k, v in (("mode", a.compile_mode), ("backend", a.compile_backend))
        if v not in ("default", "inductor")}
    rows = []
    try:
        if a.openlrm:
            print(f"OpenLRM {a.preset} from {a.openlrm} vs lrm_fast ({a.backend}), torch threads "
                  f"{torch.get_num_threads()}", flush=True)
            rows += compare_openlrm(a.openlrm, a.preset, a.resolution, a.grid, a.repeat, a.backend, a.memory,
                                    a.fitted, compile_kwargs)
        if a.triposr:
            print(f"TripoSR from {a.triposr} vs lrm_fast triposr ({a.backend})", flush=True)
            rows += compare_triposr(a.triposr, a.triposr_site, a.triposr_resolution, a.triposr_grid, a.repeat,
                                    a.backend, a.memory, a.fitted, compile_kwargs)
    except (FileNotFoundError, ValueError, RuntimeError, ImportError, NotImplementedError) as e:
        print(f"bench.scripts.anchors: error: {type(e).__name__}: {e}", file=sys.stderr)
        if rows:
            print(table(rows))
        return 2
    print(table(rows))
    import platform

    meta = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "args": vars(a),
            "when_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "command": "python -m bench.scripts.anchors " + shlex.join(sys.argv[1:] if argv is None else argv)}
    if a.json:
        from bench.lib.results import write_atomic

        write_atomic(a.json, json.dumps({"meta": meta, "rows": rows}, indent=1))
        write_atomic(os.path.splitext(a.json)[0] + ".md",
                     f"# Anchors vs lrm_fast ({meta['when_utc']} UTC)\n\n" + summary(meta, rows))
    if a.readme:
        write_readme(a.readme, meta, rows, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
