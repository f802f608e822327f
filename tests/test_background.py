"""``lrm_fast.remove_background`` (lrm_fast/io/background.py) and where it is used: the API, the CLI's
``--remove-bg``, the web demo (tests/test_web_demo.py covers the page's checkbox).

Accuracy is measured on photos made from seeds by ``bench/suites/bench_background.py`` (synthetic objects
with exact masks over plain / gradient / textured backgrounds, blurred, JPEG); here a small version
of the plain and gradient goals (mean IoU >= 0.95)."""
import os

import numpy as np
import pytest
import torch

import lrm_fast
from bench.suites.bench_background import GOALS, iou, make_photo
from lrm_fast.io.background import remove_background

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "lrm_fast", "assets", "sample.png")


@pytest.mark.parametrize("kind", ["plain", "gradient"])
def test_builtin_reaches_the_goal_on_plain_and_gradient(kind):
    ious = []
    for seed in range(6):
        rgb, mask = make_photo(seed, kind, 256)
        out = remove_background(rgb, "builtin")
        assert out.shape == (256, 256, 4) and out.dtype == np.float32
        np.testing.assert_array_equal(out[..., :3], rgb.astype(np.float32) / 255)   # colours untouched
        ious.append(iou(out[..., 3] > 0.5, mask))
    assert np.mean(ious) >= GOALS[kind], ious


def test_rgba_with_alpha_is_used_as_is():
    from lrm_fast.io.images import load_image

    rgba = load_image(SAMPLE)
    for method in ("auto", "builtin", "none"):
        assert np.array_equal(remove_background(SAMPLE, method), rgba)
    # an opaque RGBA (alpha all 1) is an opaque photo: it gets cut out
    rgb, mask = make_photo(0, "plain", 128)
    opaque = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)
    assert iou(remove_background(opaque, "builtin")[..., 3] > 0.5, mask) > 0.9


def test_no_foreground_is_one_line_error():
    for img in (np.full((64, 64, 3), 200, np.uint8), np.zeros((48, 80, 3), np.uint8)):
        with pytest.raises(ValueError, match="no foreground object found") as e:
            remove_background(img, "builtin")
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown background removal method"):
        remove_background(SAMPLE, "magic")


def test_rembg_missing_model_says_where_to_put_it(tmp_path, monkeypatch):
    from lrm_fast.io import background as bg

    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2"))
    assert bg.rembg_model_path() == str(tmp_path / "u2" / "u2net.onnx")
    why = bg.rembg_status()
    assert why is not None
    assert bg.resolve_method("auto") == "builtin"   # never a download: auto falls back
    rgb, _ = make_photo(1, "plain", 64)
    with pytest.raises(RuntimeError) as e:
        remove_background(rgb, "rembg")
    msg = str(e.value)
    assert "\n" not in msg and ("pip install rembg" in msg or str(tmp_path / "u2" / "u2net.onnx") in msg), msg


def test_api_cuts_opaque_photos_out(tmp_path):
    """reconstruct() of an opaque photo == reconstruct() of its cut-out; ``none`` keeps the old path."""
    from lrm_fast.api import input_spec, prepare_image
    from lrm_fast.io.images import load_image, preprocess

    model = lrm_fast.load_model("tiny", seed=0)
    rgb, _ = make_photo(2, "gradient", 128)
    cut = remove_background(rgb, "builtin")
    a = model.reconstruct(rgb, remove_background="builtin")
    b = model.reconstruct(cut, remove_background="none")
    torch.testing.assert_close(a.inputs, b.inputs, rtol=0, atol=0)
    torch.testing.assert_close(a.triplane, b.triplane, rtol=0, atol=0)
    size, bgc, ratio = input_spec(model)
    plain = preprocess(load_image(rgb), size, bgc, ratio)
    assert torch.equal(prepare_image(rgb, size, bgc, ratio, remove_background="none"), plain)
    assert not torch.equal(a.inputs[0], plain)
    with pytest.raises(ValueError, match="no foreground"):
        model.reconstruct(np.full((40, 40, 3), 128, np.uint8))
    # an RGBA input is unchanged by the default (bit for bit the old path)
    torch.testing.assert_close(model.reconstruct(SAMPLE).inputs[0], preprocess(load_image(SAMPLE), size, bgc, ratio),
                               rtol=0, atol=0)


def test_cli_remove_bg_flag(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from lrm_fast.cli import build_parser, main

    monkeypatch.delenv("LRM_FAST_DEBUG", raising=False)
    assert build_parser().parse_args(["reconstruct"]).remove_bg == "auto"
    rgb, _ = make_photo(3, "plain", 96)
    photo = str(tmp_path / "photo.jpg")
    Image.fromarray(rgb).save(photo)
    flat = str(tmp_path / "flat.png")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(flat)
    args = ["--model", "tiny", "--formats", "triplane", "--quiet", "--workers", "0"]
    assert main(["reconstruct", photo, "--out", str(tmp_path / "a"), "--remove-bg", "builtin", *args]) == 0
    assert main(["reconstruct", photo, "--out", str(tmp_path / "b"), "--remove-bg", "none", *args]) == 0
    capsys.readouterr()
    # no foreground: one line naming the file, exit 2 (the only input)
    assert main(["reconstruct", flat, "--out", str(tmp_path / "c"), "--remove-bg", "builtin", *args]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert len(err) == 1 and "no foreground object found" in err[0] and "flat.png" in err[0], err
    # rembg asked for but unusable: one line, before any model is loaded
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "nowhere"))
    assert main(["reconstruct", photo, "--out", str(tmp_path / "d"), "--remove-bg", "rembg", *args]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "--remove-bg rembg" in err[0], err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reconstruct", "--remove-bg", "magic"])


def test_rembg_from_disk_only(tmp_path, monkeypatch):
    """With rembg installed and u2net.onnx on disk, ``auto`` picks rembg and opens that file as rembg's
    ``u2net_custom`` model (which never downloads); a stand-in rembg module records the call."""
    import importlib.machinery
    import sys
    import types

    from PIL import Image

    from lrm_fast.io import background as bg

    calls = []

    class Session:
        def predict(self, img):
            a = np.zeros((img.size[1], img.size[0]), np.uint8)
            a[8:-8, 8:-8] = 255
            return [Image.fromarray(a)]

    def new_session(name, **kw):
        calls.append((name, kw))
        return Session()

    fake = types.ModuleType("rembg")
    fake.__spec__ = importlib.machinery.ModuleSpec("rembg", None)
    fake.new_session = new_session
    monkeypatch.setitem(sys.modules, "rembg", fake)
    monkeypatch.setattr(bg, "_REMBG_SESSION", None)
    home = tmp_path / "u2"
    monkeypatch.setenv("U2NET_HOME", str(home))
    assert "not on disk" in bg.rembg_status() and str(home / "u2net.onnx") in bg.rembg_status()
    assert bg.resolve_method("auto") == "builtin"
    home.mkdir()
    (home / "u2net.onnx").write_bytes(b"onnx")
    assert bg.rembg_status() is None and bg.resolve_method("auto") == "rembg"
    out = remove_background(np.full((48, 40, 3), 100, np.uint8))   # auto -> rembg
    assert calls == [("u2net_custom", {"model_path": str(home / "u2net.onnx")})]
    assert out.shape == (48, 40, 4) and out[24, 20, 3] == 1.0 and out[0, 0, 3] == 0.0
