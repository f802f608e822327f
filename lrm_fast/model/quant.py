"""Dynamic int8 for CPU inference: the encoder's and decoder's token Linears in int8, the rest fp32.

``quantize_int8(model, engine="onednn")`` returns a copy of an ``LRM`` whose ``nn.Linear`` layers
inside the transformer blocks that act on tokens (the ViT's qkv / proj / MLP, the decoder's q / kv /
qkv / proj / MLP) are PyTorch's dynamic int8 Linear (``torch.ao.nn.quantized.dynamic.Linear``):
weights int8 per output channel (``per_channel_dynamic_qconfig``), each call quantizes its input
per tensor, multiplies in int8 with int32 accumulation and returns fp32. LayerNorms, attention (``ops.attention``, still SDPA), the
GELU / GEGLU, the residual adds and the adaLN op stay fp32 and unchanged.

Kept fp32 on purpose:

* the adaLN modulation Linears (``ModLN.mlp``) and the camera embedder: they see one row per sample
  (``[B, D_cam]``), where the int8 kernels do not pay (fbgemm's int8 matvec measured ~60x slower
  than the fp32 one on an AVX2 EPYC) and their error would scale every token of a layer;
* TripoSR's ``proj_in`` / ``proj_out`` around its blocks: two of ~100 Linears, but every block reads
  the first and the triplane is ``x + proj_out(...)``; in int8 they cost the TripoSR parity
  checkpoint 3 dB (33.3 vs 36.4 dB PSNR of its renders against fp32);
* the upsampler (a transposed conv), the field MLP and the renderer: everything after the triplane,
  so reconstruct-then-render differs from fp32 only by the triplane.

``engine`` is the packing backend of ``torch.backends.quantized``: ``"onednn"`` (oneDNN, the default:
fastest here), ``"x86"`` or ``"fbgemm"`` (FBGEMM). It matters only when the weights are packed: each
packed weight runs with the backend that packed it, so the engine is set for the call and restored.

The int8 model is an inference copy (``requires_grad`` off, eval mode, CPU); the original is untouched.
Whether int8 pays on a CPU is the api's ``dtype="auto"`` question (``lrm_fast.info.int8_auto``).
"""
from __future__ import annotations

import contextlib
import copy
import warnings

import torch
from torch import nn

from .decoder import ModLN

ENGINES = ("onednn", "x86", "fbgemm")


def int8_linear_names(model: nn.Module) -> list[str]:
    """The qualified names of the Linears ``quantize_int8`` turns to int8: those inside the encoder's
    and the decoder's blocks that act on tokens (not inside a ``ModLN``)."""
    skip = {f"{n}." for n, m in model.named_modules() if isinstance(m, ModLN)}
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and n.startswith(("encoder.vit.blocks.", "transformer.layers."))
            and not any(n.startswith(s) for s in skip)]


@contextlib.contextmanager
def _engine(engine: str):
    if engine not in ENGINES:
        raise ValueError(f"unknown int8 engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"int8 engine {engine!r} is not in this torch build "
                           f"(has {', '.join(torch.backends.quantized.supported_engines)})")
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = old


def quantize_int8(model: nn.Module, engine: str = "onednn") -> nn.Module:
    """A CPU inference copy of ``model`` with its token Linears in dynamic int8 (module docstring).
    ``model.int8_engine`` names the engine, ``model.int8_layers`` counts the int8 Linears."""
    p = next(model.parameters())
    if p.device.type != "cpu":
        raise ValueError(f"int8 runs on the CPU only; the model is on {p.device}")
    if p.dtype != torch.float32:
        raise ValueError(f"int8 quantizes an fp32 model; the model is {p.dtype}")
    names = int8_linear_names(model)
    with _engine(engine), warnings.catch_warnings():
        # torch 2.9+ flags torch.ao's eager quantization as deprecated (moving to torchao); it still
        # is the one dynamic int8 Linear that ships with torch
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        spec = {n: torch.ao.quantization.per_channel_dynamic_qconfig for n in names}
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), spec, dtype=torch.qint8)
    q.requires_grad_(False)
    q.int8_engine, q.int8_layers = engine, len(names)
    return q
