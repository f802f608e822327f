"""The output-format registry (``lrm_fast.io.export.EXPORTERS``): every format round-trips through
``Reconstruction.save``, bad names are one-line errors listing the registry, and the API, the CLI and
batches read the same list."""
import os

import numpy as np
import pytest
import torch

import lrm_fast
from lrm_fast.io.export import EXPORTERS, KINDS, check_formats, formats_help, load_triplane

SAMPLE = os.path.join(os.path.dirname(lrm_fast.__file__), "assets", "sample.png")


@pytest.fixture(scope="module")
def rec():
    return lrm_fast.load_model("tiny", device="cpu").reconstruct(SAMPLE)


def _reload(name: str, path: str, rec):
    """Read back what format ``name`` wrote at ``path`` and check it against ``rec``."""
    kind = EXPORTERS[name].kind
    if kind == "mesh":
        import trimesh

        m = trimesh.load(path, force="mesh")
        assert len(m.faces) > 0 and len(m.vertices) > 0
    elif kind == "video":
        import imageio.v2 as imageio

        frames = imageio.mimread(path)
        assert len(frames) == 3 and frames[0].shape[:2] == (16, 16)
    elif kind == "frames":
        from PIL import Image

        assert np.asarray(Image.open(path)).shape[:2] in ((16, 16), tuple(rec.inputs.shape[-2:]))
    else:
        planes, meta = load_triplane(path)
        torch.testing.assert_close(planes, rec.triplane[0].float(), rtol=0, atol=0)
        assert meta["model"] == rec.model.cfg.name


@pytest.mark.parametrize("name", list(EXPORTERS))
def test_every_format_round_trips_through_save(name, rec, tmp_path):
    written = rec.save(str(tmp_path), formats=(name,), n_views=3, resolution=16, mc_resolution=20, names=["x"])
    assert written and all(os.path.isfile(p) for p in written)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in written)  # no temp files left
    want = {"frames": 4, "video": 1, "mesh": 1, "triplane": 1}[EXPORTERS[name].kind]  # png: 3 views + the input
    assert len(written) == want
    for p in written:
        _reload(name, p, rec)


def test_registry_kinds_and_order():
    assert list(EXPORTERS) == ["glb", "obj", "ply", "mp4", "gif", "png", "triplane"]
    assert all(e.kind in KINDS for e in EXPORTERS.values())
    assert [n for n, e in EXPORTERS.items() if e.texture] == ["glb", "obj"]
    assert check_formats(".GLB, mp4,glb") == ("glb", "mp4")


@pytest.mark.parametrize("bad", [("fbx",), "stl,glb", ()])
def test_unknown_format_is_one_line_listing_the_registry(bad, rec, tmp_path):
    with pytest.raises(ValueError) as e:
        rec.save(str(tmp_path), formats=bad)
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in EXPORTERS)
    assert not os.listdir(tmp_path)
    with pytest.raises(ValueError, match="cannot be written as ply"):
        rec.save(str(tmp_path), formats=("glb", "ply"), texture=True)


def test_cli_api_and_batch_agree():
    import argparse

    from lrm_fast.api import FORMATS
    from lrm_fast.commands import reconstruct, render

    assert FORMATS == tuple(EXPORTERS)
    p = argparse.ArgumentParser()
    reconstruct.add_arguments(p)
    help_text = " ".join(p.format_help().split())
    assert formats_help() in help_text and all(n in help_text for n in FORMATS)
    p = argparse.ArgumentParser()
    render.add_arguments(p)
    assert formats_help(("frames", "video")) in " ".join(p.format_help().split())


def test_cli_unknown_format_lists_the_registry(capsys, tmp_path, monkeypatch):
    from lrm_fast.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LRM_FAST_DEBUG", raising=False)
    assert main(["reconstruct", "--formats", "glb,fbx"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "fbx" in err[0] and all(n in err[0] for n in EXPORTERS), err


def test_batch_writes_the_registry_formats(tmp_path):
    model = lrm_fast.load_model("tiny", device="cpu")
    s = lrm_fast.reconstruct_many(model, SAMPLE, str(tmp_path), formats=("triplane", "ply"), workers=0,
                                  n_views=2, resolution=8, mc_resolution=16, verbose=False)
    assert s.ok and sorted(os.path.basename(p) for p in s.written) == ["sample.ply", "sample.triplane.safetensors"]
    with pytest.raises(ValueError, match="choose from glb, obj, ply, mp4, gif, png, triplane"):
        lrm_fast.reconstruct_many(model, SAMPLE, str(tmp_path), formats="fbx")
