"""Image loading / validation / preprocessing: every bad input has its clear error."""
import numpy as np
import pytest
import torch
from PIL import Image

from lrm_fast.io.images import MAX_SIDE, load_image, preprocess, recenter


def _png(path, arr, mode=None):
    Image.fromarray(arr, mode=mode).save(path)
    return str(path)


def test_missing_and_not_an_image(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ValueError, match="text.png: not an image file"):
        load_image(tmp_path / "text.png")
    with pytest.raises(ValueError, match="is a folder"):
        load_image(tmp_path)


def test_truncated_file(tmp_path):
    p = _png(tmp_path / "full.png", (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    data = open(p, "rb").read()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png: unreadable or truncated"):
        load_image(tmp_path / "cut.png")


def test_modes_are_converted(tmp_path):
    g = np.tile(np.arange(64, dtype=np.uint8)[None] * 4, (64, 1))
    out = load_image(_png(tmp_path / "gray.png", g))
    assert out.shape == (64, 64, 4) and np.allclose(out[..., 0], out[..., 2]) and (out[..., 3] == 1).all()
    # 16-bit grayscale: scaled by 1/65535, not clipped at 255
    g16 = (np.tile(np.linspace(0, 65535, 64)[None], (64, 1))).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = load_image(tmp_path / "g16.png")
    assert out[0, -1, 0] == pytest.approx(1.0, abs=1e-3) and out[0, 32, 0] == pytest.approx(32 / 63, abs=1e-2)
    # palette with a transparent index keeps its transparency
    pal = Image.fromarray(np.zeros((40, 40), np.uint8), mode="L").convert("P")
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    assert load_image(tmp_path / "pal.png")[..., 3].max() == 0
    # uint16 / bool arrays, [H, W] and [H, W, 2]
    assert load_image(np.full((40, 40), 65535, np.uint16))[..., 0].min() == 1.0
    assert load_image(np.ones((40, 40, 2), bool)).shape == (40, 40, 4)


def test_array_and_tensor_errors():
    with pytest.raises(ValueError, match="NaN or inf"):
        load_image(np.full((40, 40, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\].*divide by 255"):
        load_image(np.full((40, 40, 3), 200.0, np.float32))
    with pytest.raises(ValueError, match="shape"):
        load_image(np.zeros((40, 40, 5), np.uint8))
    with pytest.raises(ValueError, match="unsupported dtype"):
        load_image(np.zeros((40, 40, 3), np.int64))
    with pytest.raises(ValueError, match="expected a path"):
        load_image(12)
    t = load_image(torch.rand(3, 40, 48))  # channels-first tensor
    assert t.shape == (40, 48, 4)


def test_tiny_and_huge(tmp_path):
    with pytest.raises(ValueError, match="too small.*31x40"):
        load_image(np.zeros((40, 31, 3), np.uint8))
    big = load_image(np.zeros((40, MAX_SIDE + 200, 3), np.uint8))
    assert big.shape[1] == MAX_SIDE


def test_recenter_and_ratio():
    rgba = np.zeros((100, 200, 4), np.float32)
    rgba[10:30, 20:60] = [1, 0, 0, 1]          # a 20x40 red box, far off-center
    out = recenter(rgba, 0.5)
    assert out.shape == (80, 80, 4)             # side = 40 / 0.5
    ys, xs = np.nonzero(out[..., 3] > 0.5)
    assert (ys.min() + ys.max()) / 2 == pytest.approx(39.5, abs=1) and (xs.min() + xs.max()) / 2 == pytest.approx(39.5, abs=1)
    t = preprocess(rgba, 32, background=1.0, foreground_ratio=0.5)
    assert t.shape == (3, 32, 32)
    assert t[:, 16, 16].tolist() == pytest.approx([1, 0, 0], abs=1e-3)   # object in the middle
    assert t[:, 0, 0].tolist() == pytest.approx([1, 1, 1], abs=1e-3)    # white background
    with pytest.raises(ValueError, match="alpha channel is empty"):
        recenter(np.zeros((40, 40, 4), np.float32), 0.8)


def test_no_alpha_is_used_as_is_and_matting_hook():
    rgb = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    rgba = np.concatenate([rgb, np.ones_like(rgb[..., :1])], -1)
    t = preprocess(rgba, 64, 1.0, foreground_ratio=0.85)
    torch.testing.assert_close(t, torch.from_numpy(rgb).permute(2, 0, 1), atol=1e-5, rtol=0)
    called = {}

    def matting(x):
        called["shape"] = x.shape
        a = np.zeros(x.shape[:2], np.float32)
        a[16:48, 16:48] = 1
        return a

    t = preprocess(rgba, 32, 0.5, foreground_ratio=1.0, matting=matting)
    assert called["shape"] == (64, 64, 3) and t.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="matting returned alpha"):
        preprocess(rgba, 32, matting=lambda x: np.zeros((3, 3)))


def test_non_square_is_padded_not_stretched():
    rgba = np.ones((32, 64, 4), np.float32)
    rgba[..., :3] = 0                           # black, opaque, 2:1
    t = preprocess(rgba, 32, background=1.0)
    assert t[:, 0, 16].tolist() == pytest.approx([1, 1, 1], abs=1e-3) and t[:, 16, 16].sum() < 1e-3


def test_the_originals_preprocessing_by_name():
    """``prepare(..., mode)``: TripoSR's and OpenLRM's file-to-input steps (their parity from the
    same files: tests/parity/test_preprocess.py); their errors are one line."""
    from lrm_fast.config import EncoderConfig
    from lrm_fast.io.images import prepare, preprocess_openlrm, preprocess_triposr

    rgba = np.zeros((40, 80, 4), np.float32)
    rgba[10:20, 50:70] = [0.2, 0.4, 0.6, 1.0]
    t = preprocess_triposr(rgba, 32)            # recentered on gray: the corners are 127/255
    assert t.shape == (3, 32, 32) and t[:, 0, 0].tolist() == pytest.approx([127 / 255] * 3, abs=1e-6)
    o = preprocess_openlrm(rgba, 32)            # no recentering, stretched, on white
    assert o.shape == (3, 32, 32) and o[:, 0, 0].tolist() == pytest.approx([1, 1, 1])
    assert o[:, 12, 24].tolist() == pytest.approx([0.2, 0.4, 0.6], abs=2e-3)
    assert torch.equal(prepare(rgba, 32, "default", 1.0, 0.0), preprocess(rgba, 32, 1.0, 0.0))
    opaque = np.ones((40, 80, 4), np.float32)   # TripoSR's --no-remove-bg path: stretched as is
    assert preprocess_triposr(opaque, 32).shape == (3, 32, 32)
    called = {}

    def matting(x):
        called["n"] = called.get("n", 0) + 1
        a = np.zeros(x.shape[:2], np.float32)
        a[5:30, 5:30] = 1
        return a

    preprocess_triposr(opaque, 32, matting=matting), preprocess_openlrm(opaque, 32, matting=matting)
    assert called["n"] == 2
    with pytest.raises(ValueError, match="alpha channel is empty"):
        preprocess_triposr(np.zeros((40, 40, 4), np.float32), 32)
    line = np.zeros((40, 40, 4), np.float32)
    line[10, 5:30, 3] = 1
    with pytest.raises(ValueError, match="single row or column"):
        preprocess_triposr(line, 32)
    with pytest.raises(ValueError, match="foreground_ratio"):
        preprocess_triposr(rgba, 32, foreground_ratio=1.5)
    with pytest.raises(ValueError, match="unknown preprocess 'tripo'"):
        prepare(rgba, 32, "tripo")
    with pytest.raises(ValueError, match="unknown encoder preprocess"):
        EncoderConfig(preprocess="tripo")
