"""Image -> triplane: encoder, decoder and the whole forward, reference vs fast, per dtype.

Sizes (bench/suites/conftest.py): smoke = ``tiny``; full on CPU = ``base`` at batch 1 (the anchor config:
OpenLRM base image->triplane 8.0 s on one of these 2-core machines); GPU = every real preset.

Groups ``<stage>:<preset>/<dtype>`` pair the reference (the spec: explicit attention in timm and
the decoder, LayerNorm-then-modulate) with the fast cases of the same dtype:

* ``encoder``, ``decoder``: the module alone, backend ``reference`` vs ``fast``; on CUDA the decoder
  also per attention kernel (``sdpa``, ``xformers`` where its probe passes).
* ``image_to_triplane``: ``LRM.forward_planes`` with the reference backend vs the inference runner
  ``LRM.compile_planes`` (``model/compiled.py``; eager on CPU, CUDA graph on GPU, plus
  ``torch.compile`` for base bf16 on GPU with ``LRM_FAST_BENCH_COMPILE=1``). The runner's warm-up time is in ``extra_info``.
  On CPU, fp32 only, also ``int8``: the runner of ``model/quant.py``'s copy (dynamic int8 token Linears
  in the encoder and decoder blocks). Its ship rule is >= ``lrm_fast.info.INT8_RULE`` x the fp32
  ``runner`` of the same run; the ratio measured per CPU int8 class goes into ``info.INT8_MEASURED``,
  which ``dtype="auto"`` reads.

bf16 cases run under autocast (reference: fp32 weights cast by autocast; runner: its own bf16 weight
copy). Run: ``LRM_FAST_BENCH=full .venv/bin/python -m pytest bench/suites/bench_image_to_triplane.py
-p no:cacheprovider --benchmark-json=...``.
"""
from __future__ import annotations

import contextlib
import functools
import os

import pytest
import torch

from bench.lib.mem import peak_memory_mb
from bench.suites.conftest import DEVICE, MODE, record, sizes

# GPU order: the presets with targets first (base <= 4 ms, paper <= 8 ms), so a --time-budget cut
# drops the others
PRESETS = sizes(smoke=["tiny"], full=["base"], gpu=["base", "paper", "small", "large"])
DTYPES = sizes(smoke=["float32", "bfloat16"], full=["float32", "bfloat16"], gpu=["bfloat16", "float32"])
GPU = DEVICE == "cuda"
ROUNDS, WARMUP = (10, 3) if GPU else (2, 0)  # CPU base reference ~tens of seconds per call


@functools.lru_cache(maxsize=None)
def _model(preset: str):
    from lrm_fast.config import LRMConfig
    from lrm_fast.model.lrm import LRM

    torch.manual_seed(0)
    return LRM(LRMConfig.preset(preset)).to(DEVICE).eval().requires_grad_(False)


@functools.lru_cache(maxsize=None)
def _inputs(preset: str):
    m = _model(preset)
    S = m.cfg.encoder.image_size
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, S, S, generator=g).to(DEVICE)
    with torch.no_grad():
        tokens = m.encoder(image)
        mod = m.camera_embedder(m.default_source_camera(1, DEVICE))
    return image, tokens, mod, m.pos_embed.detach().clone()


def _autocast(dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(DEVICE, dtype=getattr(torch, dtype))


def _attention_backend(module, name: str):
    """Route only the decoder's attention through ``name`` (the rest of the model stays 'fast')."""
    from lrm_fast.model.decoder import CrossAttention, SelfAttention

    for m in module.modules():
        if isinstance(m, (SelfAttention, CrossAttention)):
            m.backend = name


def _measure(benchmark, fn, measure_memory=True, rounds=None):
    # on CUDA the conftest's benchmark clock synchronizes the device
    mem = peak_memory_mb(fn, DEVICE) if measure_memory else None
    benchmark.pedantic(fn, rounds=rounds or ROUNDS, iterations=1, warmup_rounds=WARMUP)
    return mem


def _skip_unrunnable(backend: str, dtype: str, head_dim: int):
    if backend == "xformers":
        from lrm_fast.ops.attention import probe_xformers

        ok, why = probe_xformers(torch.device(DEVICE), getattr(torch, dtype), head_dim)
        if not ok:
            pytest.skip(why)


# on CUDA "fast" is one of sdpa / xformers: time each kernel by name instead
STAGE_BACKENDS = ["reference"] + (["sdpa", "xformers"] if GPU else ["fast"])


# torch.compile costs about a minute of warm-up per preset on a GPU: opt in with LRM_FAST_BENCH_COMPILE=1
COMPILE = os.environ.get("LRM_FAST_BENCH_COMPILE", "0") == "1"
FULL_CASES = ["reference", "runner"] + (["runner-compile"] if GPU and COMPILE else []) + ([] if GPU else ["int8"])


# the whole image -> triplane first: a --time-budget cut drops per-stage cases before it
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("case", FULL_CASES)
def test_image_to_triplane(benchmark, preset, dtype, case):
    m = _model(preset)
    image = _inputs(preset)[0]
    extra = {}
    if case == "reference":
        m.set_backend("reference")

        def run():
            with torch.no_grad(), _autocast(dtype):
                return m.forward_planes(image)
    else:
        if case == "runner-compile" and not (preset == "base" and dtype == "bfloat16"):
            pytest.skip("torch.compile case only for base bf16 (compile time)")
        if case == "int8" and dtype != "float32":
            pytest.skip("int8 quantizes the fp32 model")
        m.set_backend("fast")
        mode = "compile" if case == "runner-compile" else None
        if case == "int8":
            from lrm_fast.info import cpu_int8_class
            from lrm_fast.model.quant import quantize_int8

            runner = quantize_int8(m).compile_planes(1)
            extra = {"int8_class": cpu_int8_class(), "note": "int8 token Linears; rule: vs runner"}
        else:
            runner = m.compile_planes(1, getattr(torch, dtype), mode=mode)

        def run():
            return runner(image)
        # the runner's set-up (first calls, probes, capture / compilation), reported apart
        extra.update(runner_mode=runner.mode, warmup_s=round(runner.warmup_s, 3))
    mem = _measure(benchmark, run)
    m.set_backend("auto")
    record(benchmark, "image_to_triplane", f"{preset}/{dtype}", case, case != "reference", mem, dtype=dtype,
           preset=preset, roofline="image_to_triplane", batch=1, **extra)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_encoder(benchmark, preset, dtype, backend):
    m = _model(preset)
    image = _inputs(preset)[0]
    m.encoder.backend = backend

    def run():
        with torch.no_grad(), _autocast(dtype):
            return m.encoder(image)
    # CPU full: memory of the encoder is not the question here, and the forked run costs a call
    # the encoder is ~3 s on CPU and its two paths differ by <10%: more rounds against the noise
    mem = _measure(benchmark, run, measure_memory=GPU or MODE == "smoke", rounds=max(ROUNDS, 5))
    record(benchmark, "encoder", f"{preset}/{dtype}", backend, backend != "reference", mem, dtype=dtype,
           preset=preset, roofline="encoder", batch=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("backend", STAGE_BACKENDS)
def test_decoder(benchmark, preset, dtype, backend):
    m = _model(preset)
    _skip_unrunnable(backend, dtype, m.cfg.decoder.dim // m.cfg.decoder.heads)
    _, tokens, mod, pos = _inputs(preset)
    m.set_backend("reference" if backend == "reference" else "fast")
    if backend in ("sdpa", "xformers"):
        _attention_backend(m.transformer, backend)

    def run():
        with torch.no_grad(), _autocast(dtype):
            return m.transformer(pos.to(tokens.dtype), tokens, mod)
    mem = _measure(benchmark, run, measure_memory=GPU or MODE == "smoke")
    m.set_backend("auto")
    record(benchmark, "decoder", f"{preset}/{dtype}", backend, backend != "reference", mem, dtype=dtype,
           preset=preset, roofline="decoder", batch=1, tokens=pos.shape[1], cond_tokens=tokens.shape[1])
