"""Issue 15: the held-out benchmark (baselines, determinism), pictures and the report folder."""
import json
import os

import numpy as np
import pytest
import torch

import lrm_fast
from lrm_fast.train.evaluate import SPHERE_RADII, benchmark, heldout_object, source_image, view_iou, view_psnr


def test_metrics_closed_form():
    gt = torch.zeros(2, 4, 4, 3)
    assert torch.allclose(view_psnr(torch.full_like(gt, 0.1), gt), torch.full((2,), 20.0))
    a = torch.zeros(4, 4, dtype=torch.bool)
    a[:2] = True
    b = torch.zeros_like(a)
    b[1:3] = True
    assert view_iou(a, b).item() == pytest.approx(4 / 12)
    assert view_iou(torch.zeros_like(a), torch.zeros_like(a)).item() == 1.0


def test_heldout_objects_are_deterministic_and_inside_the_box():
    for shifted in (False, True):
        for i in range(5):
            p1, c1 = heldout_object(1001, i, 8, shifted)
            p2, c2 = heldout_object(1001, i, 8, shifted)
            assert np.array_equal(c1, c2) and all(np.array_equal(a.center, b.center) for a, b in zip(p1, p2))
            assert max(np.linalg.norm(p.center) + p.bound_radius() for p in p1) <= 0.97 + 1e-5
            d = np.linalg.norm(c1[:, :3, 3], axis=-1)
            assert ((d >= 1.9) & (d <= 2.6)).all()
    src = source_image(heldout_object(1000, 0)[0], 32)
    assert src.dtype == np.uint8 and src.shape == (32, 32, 4) and (src[..., 3] > 0).any()


def test_benchmark_tiny_model():
    model = lrm_fast.load_model("tiny", device="cpu")
    r = benchmark(model, objects=2, shifted=1, views=2, resolution=16, batch=2)
    a, b = r["in_distribution"], r["shifted"]
    assert a["objects"] == 2 and b["objects"] == 1 and r["meets_targets"] in (True, False)
    for s in (a, b):
        assert s["white"]["iou"] == 0.0 and s["white"]["psnr"] > 0 and s["sphere"]["radius"] in SPHERE_RADII
        assert 0 <= s["iou"] <= 1 and 0 <= s["sphere"]["iou"] <= 1 and s["lpips"] is None
    assert r["lpips"].startswith("not computed")
    again = benchmark(model, objects=2, shifted=0, views=2, resolution=16, batch=1)
    assert again["in_distribution"]["white"]["psnr"] == pytest.approx(a["white"]["psnr"])
    assert again["in_distribution"]["psnr"] == pytest.approx(a["psnr"], abs=1e-4)


def test_ball_on_box_parts_and_colours():
    """The README picture's scene: the ball is red, the box blue, they do not overlap, they cover the
    object, and the per-part colour check reads 0 for the truth and the channel gap for a wrong colour."""
    from lrm_fast.data.synthetic import ball_on_box, render_object
    from lrm_fast.train.evaluate import part_colours, part_masks
    from lrm_fast.train.pictures import VIEW_AZ, VIEW_EL, orbit_c2w

    prims = ball_on_box()
    assert max(np.linalg.norm(p.center) + p.bound_radius() for p in prims) <= 0.97   # the recipes' limit
    c2w = orbit_c2w(VIEW_AZ, VIEW_EL)
    rgba, _ = render_object(prims, c2w, 32)
    masks = part_masks(prims, c2w, 32)
    assert masks.shape == (2, 4, 32, 32) and not (masks[0] & masks[1]).any()
    assert np.array_equal(masks.any(0), rgba[..., 3] > 0) and masks[0].sum() > 50 and masks[1].sum() > 50
    gt = rgba[..., :3]
    box, ball = part_colours(gt, gt, masks)
    assert box["error"] == 0 and ball["error"] == 0
    assert box["true"][2] > box["true"][0] + 0.2 and ball["true"][0] > ball["true"][2] + 0.3
    gray = np.full_like(gt, 0.5)
    box, ball = part_colours(gray, gt, masks)
    assert ball["error"] == pytest.approx(max(abs(0.5 - c) for c in ball["true"]), abs=1e-3)
    empty = part_colours(gt, gt, np.zeros_like(masks))
    assert empty[0]["pixels"] == 0 and empty[0]["error"] is None


def test_colour_response_reads_gray_as_zero_chroma(monkeypatch):
    """``colour_response``: 3 channel permutations x 2 parts of the ball on the box; a renderer that paints
    the object gray (what a colour-blind model makes) reads chroma ratio 0, one that paints the truth
    reads follow 1 and ratio 1 (the views' truth is recomputed here, independently of the model)."""
    from lrm_fast.data import synthetic
    from lrm_fast.train import evaluate, pictures

    model = lrm_fast.load_model("tiny", device="cpu")
    r = pictures.colour_response(model, resolution=16)
    assert len(r["parts"]) == 6 and -1 <= r["follow"] <= 1 and r["chroma_ratio"] >= 0
    assert {tuple(p["permutation"]) for p in r["parts"]} == set(pictures.COLOUR_PERMUTATIONS)

    seen = {}
    real_render = synthetic.render_object

    def spy(prims, c2w, res, focal=0.75):   # remembers the scene being scored: the "model" paints it
        seen["prims"] = prims
        return real_render(prims, c2w, res, focal)

    class Painted:
        def __init__(self, gray):
            self.gray = gray

        def render(self, cameras, resolution, background):
            g = real_render(seen["prims"], pictures.orbit_c2w(pictures.VIEW_AZ, pictures.VIEW_EL), resolution)[0]
            rgb = g[..., :3] * g[..., 3:] + (1 - g[..., 3:])
            if self.gray:
                rgb = np.repeat(rgb.mean(-1, keepdims=True), 3, -1)
            return {"rgb": torch.from_numpy(rgb)[None].float()}

    for gray, follow, ratio in ((True, None, 0.0), (False, 1.0, 1.0)):
        monkeypatch.setattr(evaluate, "render_object", spy)
        monkeypatch.setattr(model, "reconstruct", lambda img, gray=gray: Painted(gray))
        r = pictures.colour_response(model, resolution=16)
        assert r["chroma_ratio"] == pytest.approx(ratio, abs=0.01)
        if follow is not None:
            assert r["follow"] == pytest.approx(follow, abs=0.01)


def test_pictures_and_eval_cli(tmp_path, capsys):
    from lrm_fast.cli import main
    from lrm_fast.train.pictures import make_pictures

    model = lrm_fast.load_model("tiny", device="cpu")
    out = make_pictures(model, str(tmp_path / "p.png"), objects=1, resolution=32, mesh_resolution=16, recipe="rich")
    from PIL import Image

    with Image.open(out) as im:
        assert im.size[0] > 8 * 32 and im.size[1] > 3 * 32     # sample, ball on box, 1 held-out object
    said = capsys.readouterr().out
    assert "ball: model (" in said and "box: model (" in said and "vs truth (" in said
    assert main(["eval", "tiny", "--objects", "1", "--shifted", "0", "--views", "1", "--resolution", "8",
                 "--out", str(tmp_path / "e.json")]) == 0
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["in_distribution"]["objects"] == 1 and "shifted" not in res
