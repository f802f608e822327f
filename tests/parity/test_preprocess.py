"""Parity of the preprocessing, from the file: what TripoSR's ``run.py`` and OpenLRM's inferrers
feed their encoder, against what ours does with the same PNG.

The fixture (``fixtures/preprocess``: three small PNG files and the originals' encoder inputs,
recorded by ``tools/parity/preprocess.py`` running their own code) needs neither original here.
Rules: every recorded input within 1/255 of ours (``lrm_fast.io.images.prepare`` by name, and
through the API with the mode a checkpoint of that family gets by default); then the planes the
parity checkpoints (``fixtures/triposr``, ``fixtures/openlrm-v1.*``) make of the PNG through
``lrm_fast.reconstruct`` within the plane rule (3e-5, as ``test_triposr.py``/``test_openlrm.py``) of
those they make of the original's recorded input (the network itself is compared with the
originals' by those two files, from the same tensor), and, for TripoSR, the planes its own program
makes of each file (``planes-triposr.npz``: ``run.py``'s loop + ``TSR.forward``) and OpenLRM v1.1's
(``planes-openlrm.npz``: ``LRMInferrer.infer_single`` + ``infer_planes``) within the plane rule.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lrm_fast
from lrm_fast.api import input_spec, prepare_image, preprocess_mode
from lrm_fast.io.images import load_image, prepare, preprocess

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "preprocess"
TOL_INPUT = 1.0 / 255.0
TOL_PLANES = 3e-5
# which recorded inputs each parity checkpoint sees by default (its family, its input size)
CHECKPOINTS = {"triposr": ("triposr", 48), "openlrm-v1.1": ("openlrm", 224), "openlrm-v1.0": ("openlrm10", 96)}


@pytest.fixture(scope="module")
def recorded() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "inputs.npz") as z:
        return {k: z[k] for k in z.files}


def _keys():
    with np.load(FIXTURE / "inputs.npz") as z:
        return sorted(z.files)


def _mode_and_background(family: str) -> tuple[str, float]:
    return ("triposr", 0.5) if family == "triposr" else ("openlrm", 1.0)


def test_fixture_pins_the_originals():
    meta = json.loads((FIXTURE / "meta.json").read_text())
    assert meta["triposr"]["commit"] == "d26e33181947bbbc4c6fc0f5734e1ec6c080956e"
    assert meta["openlrm"]["commit"] == "3108b6902d27912e1dcdce76970eab51436f5b21"
    assert meta["openlrm10"]["commit"] == "d4caebbea3f446904d9faafaf734e797fcc4ec89"
    assert meta["triposr"]["foreground_ratio"] == 0.85
    assert len(_keys()) == 15


@pytest.mark.parametrize("key", _keys())
def test_encoder_input_from_the_file(key, recorded):
    family, stem, size = key.split("_")
    mode, bg = _mode_and_background(family)
    ours = prepare(load_image(FIXTURE / f"{stem}.png"), int(size), mode, bg, 0.85)
    want = recorded[key]
    assert ours.shape == want.shape and ours.dtype == torch.float32
    assert float(np.abs(ours.numpy() - want).max()) <= TOL_INPUT


def test_the_default_preprocessing_is_not_theirs(recorded):
    """The rule bites: this project's own preprocessing (recentering at the alpha > 0.5 box, square
    padding, no stretching; no uint8 truncation: TripoSR's gray is 127/255) fails it on these files."""
    rgba = load_image(FIXTURE / "offcentre.png")
    assert np.abs(preprocess(rgba, 48, 0.5, 0.85).numpy() - recorded["triposr_offcentre_48"]).max() > 4 * TOL_INPUT
    assert np.abs(preprocess(rgba, 48, 1.0, 0.8).numpy() - recorded["openlrm_offcentre_48"]).max() > 4 * TOL_INPUT
    tall = load_image(FIXTURE / "tall.png")
    assert np.abs(preprocess(tall, 48, 1.0, 0.0).numpy() - recorded["openlrm_tall_48"]).max() > 4 * TOL_INPUT


@pytest.fixture(scope="module", params=sorted(CHECKPOINTS))
def checkpoint(request):
    return request.param, lrm_fast.load_model(str(FIXTURES / request.param), device="cpu", dtype="float32",
                                              backend="reference")


def test_family_default_and_override(checkpoint):
    name, model = checkpoint
    family, size = CHECKPOINTS[name]
    mode = _mode_and_background(family)[0]
    assert preprocess_mode(model) == mode and input_spec(model)[0] == size
    assert preprocess_mode(model, "default") == "default" and preprocess_mode(model, False) == "default"
    with pytest.raises(ValueError, match="unknown preprocess 'tripo'"):
        preprocess_mode(model, "tripo")


@pytest.mark.parametrize("stem", ["offcentre", "tall", "opaque"])
def test_planes_from_the_file(checkpoint, stem, recorded):
    """``reconstruct(model, png)`` (the family's preprocessing by default) gives the planes of the
    original's own encoder input, within the plane rule."""
    name, model = checkpoint
    family, size = CHECKPOINTS[name]
    want = torch.from_numpy(recorded[f"{family}_{stem}_{size}"])
    path = str(FIXTURE / f"{stem}.png")
    # the originals' recorded paths use the file as it is (OpenLRM never cuts out; TripoSR's run.py with
    # --no-remove-bg), so our background removal stays off here
    assert float((prepare_image(path, *input_spec(model), preprocess_mode(model), remove_background="none")
                  - want).abs().max()) <= TOL_INPUT
    rec = lrm_fast.reconstruct(model, path, remove_background="none")
    assert float((rec.inputs[0] - want).abs().max()) <= TOL_INPUT
    with torch.inference_mode():
        theirs = model.forward_planes(want[None])
    assert float((rec.triplane - theirs).abs().max()) <= TOL_PLANES


@pytest.mark.parametrize("stem", ["offcentre", "tall", "opaque"])
def test_triposr_planes_from_the_file_end_to_end(stem):
    """TripoSR's own program from the PNG to its triplanes (``run.py``'s loop + ``TSR.forward`` of
    the parity checkpoint, recorded) against ``lrm_fast.reconstruct(model, png)``: the plane rule."""
    model = lrm_fast.load_model(str(FIXTURES / "triposr"), device="cpu", dtype="float32", backend="reference")
    with np.load(FIXTURE / "planes-triposr.npz") as z:
        theirs = torch.from_numpy(z[f"triposr_{stem}"])

    def planes(mode):
        p = lrm_fast.reconstruct(model, str(FIXTURE / f"{stem}.png"), preprocess=mode,
                                 remove_background="none").triplane
        return torch.stack([p[:, 0], p[:, 1], p[:, 2].transpose(-1, -2)], 1)   # TripoSR's layout

    ours = planes(True)
    assert ours.shape == theirs.shape
    assert float((ours - theirs).abs().max()) <= TOL_PLANES
    assert float((planes("default") - theirs).abs().max()) > 100 * TOL_PLANES   # the rule bites


def test_cli_preprocess_flag(tmp_path, monkeypatch):
    """``lrm-fast reconstruct --preprocess NAME`` reaches ``reconstruct_many`` (auto: the family's)."""
    import lrm_fast.batch
    from lrm_fast.cli import main

    seen = []

    def fake(model, paths, out, formats, **kw):
        seen.append(kw["preprocess"])
        return lrm_fast.batch.BatchSummary(total=0, rank=0, world=1)

    monkeypatch.setattr(lrm_fast.batch, "reconstruct_many", fake)
    png = str(FIXTURE / "tall.png")
    for flag, want in ((["--preprocess", "openlrm"], "openlrm"), ([], True)):
        assert main(["reconstruct", png, "--model", "tiny", "--out", str(tmp_path), "--quiet", *flag]) == 0
        assert seen[-1] == want


def test_batch_uses_the_family_preprocessing(tmp_path, recorded):
    """``reconstruct_many`` (what the CLI runs) prepares files as ``reconstruct`` does."""
    from lrm_fast.batch import reconstruct_many
    from lrm_fast.io.export import load_triplane

    model = lrm_fast.load_model(str(FIXTURES / "triposr"), device="cpu", dtype="float32", backend="reference")
    summary = reconstruct_many(model, [str(FIXTURE / "offcentre.png")], str(tmp_path), ("triplane",), workers=0,
                               verbose=False)
    assert summary.ok
    got, _ = load_triplane(str(tmp_path / "offcentre" / "offcentre.triplane.safetensors"))
    with torch.inference_mode():
        theirs = model.forward_planes(torch.from_numpy(recorded["triposr_offcentre_48"])[None])[0]
    assert float((got - theirs).abs().max()) <= TOL_PLANES


@pytest.mark.parametrize("stem", ["offcentre", "tall", "opaque"])
def test_openlrm_planes_from_the_file_end_to_end(stem):
    """OpenLRM v1.1's own inferrer from the PNG to its triplanes (``LRMInferrer.infer_single`` and its
    ``infer_planes`` on the v1.1 parity checkpoint, recorded) against ``lrm_fast.reconstruct(model,
    png)`` with the canonical source camera: the plane rule (same layout)."""
    model = lrm_fast.load_model(str(FIXTURES / "openlrm-v1.1"), device="cpu", dtype="float32", backend="reference")
    with np.load(FIXTURE / "planes-openlrm.npz") as z:
        theirs = torch.from_numpy(z[f"openlrm_{stem}"])
    ours = lrm_fast.reconstruct(model, str(FIXTURE / f"{stem}.png"), remove_background="none").triplane
    assert ours.shape == theirs.shape
    assert float((ours - theirs).abs().max()) <= TOL_PLANES
    other = lrm_fast.reconstruct(model, str(FIXTURE / f"{stem}.png"), preprocess="default",
                                 remove_background="none").triplane
    assert float((other - theirs).abs().max()) > 100 * TOL_PLANES   # the rule bites
