"""dtype="int8" (``lrm_fast/model/quant.py``): the int8 model against its fp32 twin, and the rule
that decides ``dtype="auto"`` on the CPU (``lrm_fast.info.int8_auto``).

The accuracy half of the ship rule: renders of the reconstructed triplane, int8 vs fp32, within
35 dB PSNR, for the shipped demo model and both parity checkpoints in the originals' layouts
(``tests/parity/fixtures``: OpenLRM v1.0 and v1.1, TripoSR). The speed half (>= 1.5x image ->
triplane) is a benchmark (``bench/suites/bench_image_to_triplane.py``, the ``int8`` case) whose
measured ratio per CPU class is ``info.INT8_MEASURED``.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from torch import nn

import lrm_fast
from lrm_fast.model.decoder import ModLN
from lrm_fast.model.quant import ENGINES, int8_linear_names, quantize_int8

info = importlib.import_module("lrm_fast.info")   # (lrm_fast.info is also the function)
api = importlib.import_module("lrm_fast.api")

PACKAGE = Path(lrm_fast.__file__).parent
PARITY = Path(__file__).parent / "parity" / "fixtures"
SAMPLE = PACKAGE / "assets" / "sample.png"
MIN_PSNR = 35.0


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


@pytest.mark.parametrize("engine", ENGINES)
def test_int8_twin_of_fp32(engine):
    """Every token Linear of encoder and decoder is int8; the modulation and camera MLPs, upsampler
    and field stay fp32; the triplane stays close to fp32's; the original is untouched."""
    if engine not in torch.backends.quantized.supported_engines:
        pytest.skip(f"engine {engine} not in this torch build")
    model = lrm_fast.load_model("tiny", device="cpu", dtype="fp32")
    before = torch.backends.quantized.engine
    q = quantize_int8(model, engine)
    assert torch.backends.quantized.engine == before
    names = int8_linear_names(model)
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    assert names and all(isinstance(q.get_submodule(n), dynamic) for n in names)
    assert not any(isinstance(m, dynamic) for m in model.modules())
    for m in q.transformer.modules():
        if isinstance(m, ModLN):
            assert type(m.mlp[1]) is nn.Linear
    assert all(type(m) is nn.Linear for m in q.camera_embedder.modules() if isinstance(m, nn.Linear))
    assert all(type(m) is nn.Linear for m in q.field.modules() if isinstance(m, nn.Linear))
    image = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want, got = model.forward_planes(image), q.forward_planes(image)
        runner = q.compile_planes(2)(image)
    assert float((got - want).norm() / want.norm()) < 0.1
    assert torch.equal(runner, got)


@pytest.mark.parametrize("path", [PACKAGE / "assets" / "demo", PARITY / "openlrm-v1.0", PARITY / "openlrm-v1.1",
                                  PARITY / "triposr"], ids=["demo", "openlrm-v1.0", "openlrm-v1.1", "triposr"])
def test_int8_renders_within_35db_of_fp32(path):
    """Reconstruct the sample photo, render two views: int8 vs fp32 PSNR >= 35 dB."""
    views = {}
    for dtype in ("fp32", "int8"):
        model = lrm_fast.load_model(str(path), device="cpu", dtype=dtype)
        torch.manual_seed(0)
        rec = model.reconstruct(str(SAMPLE))
        views[dtype] = rec.render(azimuths=[0, 90], elevations=15, resolution=48)["rgb"]
    assert isinstance(model.transformer.layers[0].self_attn.qkv, torch.ao.nn.quantized.dynamic.Linear)
    assert _psnr(views["int8"], views["fp32"]) >= MIN_PSNR


def test_int8_needs_cpu_and_fp32():
    model = lrm_fast.load_model("tiny", device="cpu", dtype="bf16")
    with pytest.raises(ValueError, match="quantizes an fp32 model"):
        quantize_int8(model)
    with pytest.raises(ValueError, match="unknown int8 engine"):
        quantize_int8(model.float(), "avx9")
    with pytest.raises(ValueError, match="CPU only"):
        api._int8("int8", torch.device("cuda"))


def test_auto_follows_the_measured_rule(tmp_path, monkeypatch):
    """auto picks int8 only on a CPU class measured at >= INT8_RULE; unmeasured or slower: fp32."""
    f = tmp_path / "cpuinfo"
    monkeypatch.setattr(info, "INT8_MEASURED", {"avx2": {"base": 1.7, "triposr": 1.2},
                                                "avx512_vnni": {"base": 1.8, "triposr": 1.6}})
    for flags, pick, says in (("fpu sse2", False, "no AVX2"), ("avx2 fma", False, "not all >= the 1.5x rule"),
                              ("avx2 avx512f avx512_vnni", True, "all >= the 1.5x rule"),
                              ("avx2 avx512_vnni amx_int8", False, "no recorded measurement on amx_int8")):
        f.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert info.int8_auto(str(f))[0] is pick
        assert says in info.int8_auto(str(f))[1]
    monkeypatch.setattr(api, "int8_auto", lambda: (True, "test"))
    assert api._int8("auto", torch.device("cpu")) and not api._int8("auto", torch.device("cuda"))
    monkeypatch.setattr(api, "int8_auto", lambda: (False, "test"))
    assert not api._int8("auto", torch.device("cpu"))
    assert not api._int8("fp32", torch.device("cpu"))


def test_auto_on_this_cpu_matches_info():
    """What load_model(dtype='auto') did on this machine is what ``lrm-fast info`` says."""
    pick, why = info.int8_auto()
    model = lrm_fast.load_model("tiny", device="cpu", dtype="auto")
    assert hasattr(model, "int8_engine") is pick
    text = info.info_text(presets=["tiny"], device="cpu")
    assert f"dtype='auto' on cpu -> {'int8' if pick else 'fp32'}): {why}" in text
