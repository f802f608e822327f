"""bench.scripts.anchors: the fitted base field in OpenLRM's own renderer, and the fitted TripoSR field in
TripoSR's, render what ours renders.

``bench.scripts.anchors --fitted`` times OpenLRM's ``TriplaneSynthesizer`` holding the fitted field
(bench/lib/fitted_field.py) against our renderer, so both must render the same field. OpenLRM's render
of it (deterministic sampling, 24 x 24, two views) is stored in ``fixtures/anchors_fitted_openlrm.npz``
(written by this file: ``PYTHONPATH=. python tests/test_anchors.py --openlrm PATH``, OpenLRM at
3108b69); with ``LRM_FAST_OPENLRM=PATH`` the test also renders it live from that checkout. The same for
TripoSR (``--triposr``): its renderer holding the fitted TripoSR field, two of its ``run.py`` views,
stored in ``fixtures/anchors_fitted_triposr.npz`` (``python tests/test_anchors.py --triposr PATH
[--triposr-site SITE]``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.scripts import anchors

FIXTURE = Path(__file__).parent / "fixtures" / "anchors_fitted_openlrm.npz"
FIXTURE_TRIPOSR = Path(__file__).parent / "fixtures" / "anchors_fitted_triposr.npz"
TRIPOSR_VIEWS = (2, 20.0)               # get_spherical_cameras(2 views, 20 deg elevation): azimuth 0, 180
VIEWS = ((30.0, 20.0), (200.0, -10.0))   # (azimuth, elevation) degrees, distance 2
RES = 24
TOL = 1e-4                              # the parity tests' render tolerance (fp32)


def _cameras():
    from lrm_fast.cameras import default_intrinsics, orbit_cameras

    c2w = orbit_cameras([a for a, _ in VIEWS], [e for _, e in VIEWS])[None]        # [1, V, 4, 4]
    K = default_intrinsics().expand(1, len(VIEWS), 4)
    fx, fy, cx, cy = K[0, 0].tolist()
    std = torch.cat([c2w.reshape(1, -1, 16),
                     torch.tensor([fx, 0, cx, 0, fy, cy, 0, 0, 1.0]).expand(1, len(VIEWS), 9)], -1)
    return c2w, K, std


def openlrm_render(checkout: str) -> np.ndarray:
    """OpenLRM's render ``[V, H, W, 3]`` of the fitted field (deterministic sampling, white background)."""
    planes, synth, _ = anchors.load_fitted_into_openlrm(checkout)
    _, _, std = _cameras()
    V = len(VIEWS)
    with torch.inference_mode(), anchors.openlrm_deterministic(synth):
        out = synth(planes, std, torch.zeros(1, V, 2), torch.full((1, V, 1), float(RES)), torch.ones(1, V, 1), RES)
    return out["images_rgb"][0].permute(0, 2, 3, 1).numpy()


def our_render(exact: bool = True) -> np.ndarray:
    from bench.lib.fitted_field import load_fitted_field

    planes, model = load_fitted_field()
    c2w, K, _ = _cameras()
    with torch.inference_mode():
        if exact:
            return model.renderer(planes, c2w, K, RES)["rgb"][0].numpy()
        return anchors.render_default(model, planes, c2w, K, RES, exact=False)["rgb"][0].numpy()


def triposr_render(checkout: str, site: str | None = None) -> np.ndarray:
    """TripoSR's render ``[V, H, W, 3]`` of the fitted TripoSR field (its renderer, white background)."""
    from bench.lib.fitted_field import load_fitted_field

    theirs, tsr_utils, _ = anchors.build_triposr(checkout, site)
    planes, model = load_fitted_field(preset="triposr")
    dec, planes_of = anchors.load_fitted_into_triposr(theirs, model)
    rays_o, rays_d, _, _ = anchors.triposr_cameras(tsr_utils, model.cfg, RES, *TRIPOSR_VIEWS)
    with torch.inference_mode():      # view by view, as its run.py renders
        return torch.stack([theirs.renderer(dec, planes_of(planes), o, d) for o, d in zip(rays_o, rays_d)]).numpy()


def our_triposr_render(exact: bool = True) -> np.ndarray:
    from bench.lib.fitted_field import load_fitted_field

    planes, model = load_fitted_field(preset="triposr")
    _, _, c2w, K = anchors.triposr_cameras(None, model.cfg, RES, *TRIPOSR_VIEWS)
    with torch.inference_mode():
        if exact:
            return model.renderer(planes, c2w, K, RES)["rgb"][0].numpy()
        return anchors.render_default(model, planes, c2w, K, RES, exact=False)["rgb"][0].numpy()


def test_fitted_triposr_field_renders_as_triposr_renders_it():
    want = np.load(FIXTURE_TRIPOSR)["rgb"]
    got = our_triposr_render(exact=True)
    assert got.shape == want.shape == (TRIPOSR_VIEWS[0], RES, RES, 3)
    err = float(np.abs(got - want).max())
    assert err <= TOL, f"our exact render of the fitted TripoSR field differs from TripoSR's by {err:.3g}"
    assert want.min() < 0.5 < want.max(), "the stored views must show the object on the white background"
    skip = our_triposr_render(exact=False)            # what the anchors row times for us: skipping
    mse = float(((skip - want) ** 2).mean())
    assert mse == 0 or 10 * np.log10(1 / mse) >= 45.0


def test_fitted_field_renders_as_openlrm_renders_it():
    want = np.load(FIXTURE)["rgb"]
    got = our_render(exact=True)
    assert got.shape == want.shape == (len(VIEWS), RES, RES, 3)
    err = float(np.abs(got - want).max())
    assert err <= TOL, f"our exact render of the fitted field differs from OpenLRM's by {err:.3g}"
    assert want.min() < 0.5 < want.max(), "the stored views must show the object on the white background"


def test_default_render_of_fitted_field_skips_and_stays_close():
    """What the anchors row times for us (skipping, grid built in the call; forced at this small size)
    against OpenLRM's render."""
    want = np.load(FIXTURE)["rgb"]
    got = our_render(exact=False)
    mse = float(((got - want) ** 2).mean())
    assert mse == 0 or 10 * np.log10(1 / mse) >= 45.0


@pytest.mark.skipif(not os.environ.get("LRM_FAST_OPENLRM"), reason="set LRM_FAST_OPENLRM to an OpenLRM checkout")
def test_fitted_field_live_openlrm():
    got = openlrm_render(os.environ["LRM_FAST_OPENLRM"])
    assert float(np.abs(got - our_render(exact=True)).max()) <= TOL


def test_cli_errors(capsys):
    with pytest.raises(SystemExit):
        anchors.main(["--fitted"])
    assert "give --openlrm PATH and/or --triposr PATH" in capsys.readouterr().err
    assert anchors.main(["--fitted", "--triposr", "x"]) == 2
    assert "not a TripoSR checkout" in capsys.readouterr().err
    assert anchors.main(["--triposr", str(Path(__file__).parent)]) == 2
    assert "not a TripoSR checkout" in capsys.readouterr().err
    assert anchors.main(["--openlrm", str(Path(__file__).parent)]) == 2
    assert "not an OpenLRM checkout" in capsys.readouterr().err


def test_table_format():
    rows = [{"anchor": "TripoSR", "preset": "triposr", "case": "mesh grid 256^3", "theirs_s": 2.0, "ours_s": 0.5,
             "ratio": 4.0}]
    t = anchors.table(rows)
    assert t.splitlines()[2] == "| TripoSR | triposr | mesh grid 256^3 | 2.000 s | 0.500 s | 4.00x |"


if __name__ == "__main__":   # PYTHONPATH=. python tests/test_anchors.py --openlrm PATH | --triposr PATH -> a fixture
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--openlrm")
    ap.add_argument("--triposr")
    ap.add_argument("--triposr-site")
    a = ap.parse_args()
    FIXTURE.parent.mkdir(exist_ok=True)
    if a.openlrm:
        rgb = openlrm_render(a.openlrm)
        np.savez_compressed(FIXTURE, rgb=rgb.astype(np.float32), views=np.asarray(VIEWS), res=RES)
        print(f"wrote {FIXTURE}: max |ours - theirs| = {np.abs(rgb - our_render()).max():.3g}", file=sys.stderr)
    if a.triposr:
        rgb = triposr_render(a.triposr, a.triposr_site)
        np.savez_compressed(FIXTURE_TRIPOSR, rgb=rgb.astype(np.float32), views=np.asarray(TRIPOSR_VIEWS), res=RES)
        print(f"wrote {FIXTURE_TRIPOSR}: max |ours - theirs| = {np.abs(rgb - our_triposr_render()).max():.3g}",
              file=sys.stderr)


def test_flop_floor_counts_attention_and_matmuls():
    """The floor's FLOP count: SDPA on the CPU (which torch's counter does not know) as 4 B H L S d,
    and a whole forward as at least its decoder's matmuls."""
    from torch.utils.flop_counter import FlopCounterMode

    from lrm_fast.config import LRMConfig
    from lrm_fast.model.lrm import LRM

    q, k = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8)
    with FlopCounterMode(display=False, custom_mapping={
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: anchors._sdpa_flops}) as fc:
        torch.nn.functional.scaled_dot_product_attention(q, k, k)
    assert fc.get_total_flops() == 4 * 2 * 3 * 5 * 7 * 8

    model = LRM(LRMConfig.preset("tiny")).eval()
    S = model.cfg.encoder.image_size
    f = anchors.flop_floor(model, torch.rand(1, 3, S, S))
    d = model.cfg.decoder
    L = 3 * model.cfg.triplane.low_res ** 2
    mlp = 2 * 2 * L * d.dim * int(d.dim * d.mlp_ratio) * d.layers   # the decoder MLPs alone
    assert f["tflop"] * 1e12 > mlp and f["gemm_gflops"] > 0
    assert f["floor_s"] == pytest.approx(f["tflop"] * 1e3 / f["gemm_gflops"])


def test_openlrm_deterministic_patch_is_the_parity_one():
    """bench's ``openlrm_deterministic`` and the parity generator share ``tools/parity/_common.py``'s
    patch: zero stratified jitter and ``sample_pdf(det=True)`` inside the block, the originals after."""
    from tools.parity._common import deterministic_sampling

    class Renderer:  # stands in for OpenLRM's ImportanceRenderer: the two methods the patch wraps
        def sample_stratified(self, n):
            return torch.arange(n, dtype=torch.float32) + torch.rand_like(torch.ones(n))

        def sample_pdf(self, bins, weights, N_importance, det=False, eps=1e-5):
            return det

    class Synth:
        renderer = Renderer()

    strat, pdf = Renderer.sample_stratified, Renderer.sample_pdf
    with anchors.openlrm_deterministic(Synth()) as synth:
        assert torch.equal(synth.renderer.sample_stratified(4), torch.arange(4.0))
        assert synth.renderer.sample_pdf(None, None, 8) is True
    assert Renderer.sample_stratified is strat and Renderer.sample_pdf is pdf
    undo = deterministic_sampling(Renderer)
    assert Renderer().sample_pdf(None, None, 8, det=False) is True
    undo()
    assert Renderer.sample_pdf is pdf


def _tiny_cases():
    """The three cases on the tiny preset, our fast call standing in for theirs (no checkout needed)."""
    from lrm_fast.config import LRMConfig
    from lrm_fast.model.lrm import LRM

    torch.manual_seed(0)
    ours = LRM(LRMConfig.preset("tiny"), backend="fast").eval()
    S = ours.cfg.encoder.image_size
    c2w, K, _ = anchors._openlrm_camera(16)
    side = anchors.our_cases(ours, torch.rand(1, 3, S, S), ours.default_source_camera(1), c2w, K, 16, 8,
                             anchors._grid_points(8))
    return {name: (o, o, peer) for name, (o, peer) in side.items()}


def test_compiled_reference_rows_tiny():
    """Every case gets its compiled-reference columns: torch.compile of the reference twin, checked against
    the uncompiled reference. ``backend="eager"`` (dynamo's capture, no code generation): inductor takes
    over a minute per case on a 2-core machine, the anchors run itself compiles with inductor."""
    rows = anchors._run_cases("ours", "tiny", _tiny_cases(), repeat=1, backend="fast", memory=False,
                              compile_kwargs={"backend": "eager"})
    assert [r["case"] for r in rows] == ["image->triplane", "one view 16x16", "mesh grid 8^3"]
    for r in rows:
        assert "compiled_error" not in r, r.get("compiled_error")
        assert r["compiled_s"] > 0 and r["compile_s"] >= 0 and r["compiled_with"] == "backend='eager'"
        assert r["compiled_max_abs"] <= 1e-5, (r["case"], r["compiled_max_abs"])
        assert r["ratio_compiled"] == pytest.approx(r["compiled_s"] / r["ours_s"])
    t = anchors.table(rows)
    assert "ratio (compiled / ours)" in t and "backend='eager'" in t
    assert t.splitlines()[2].count("|") == 11


def test_compiled_reference_of_the_fitted_field_peers():
    """The fitted rows' peers (a ``FittedField``: a field and a renderer, no image path) compile too; the
    first anchors run with compiled columns failed them all on a missing ``forward_planes``."""
    from bench.lib.fitted_field import load_fitted_field

    planes, model = load_fitted_field()
    c2w, K, _ = anchors._openlrm_camera(8)
    pts = anchors._grid_points(4)
    for peer in anchors._fitted_peers(model, planes, c2w, K, 8, pts):
        r = anchors.compiled_peer(*peer, repeat=1, compile_kwargs={"backend": "eager"})
        assert "compiled_error" not in r, r.get("compiled_error")
        assert r["compiled_max_abs"] <= 1e-5


def test_compile_failure_is_one_line_and_the_run_goes_on():
    cases = _tiny_cases()
    name, (t_fn, o_fn, (ref, what, call)) = next(iter(cases.items()))
    rows = anchors._run_cases("ours", "tiny", {name: (t_fn, o_fn, (ref, what, call)), "no peer": (t_fn, o_fn)},
                              repeat=1, backend="fast", memory=False, compile_kwargs={"backend": "no_such_backend"})
    assert len(rows) == 2 and "\n" not in rows[0]["compiled_error"] and "no_such_backend" in rows[0]["compiled_error"]
    assert "compiled_s" not in rows[1] and "compiled_error" not in rows[1]
    t = anchors.table(rows)
    assert "| error (below) |" in t and "- compiled reference of ours image->triplane: " in t
    assert "| - | | | |" in t


def test_max_abs_diff_counts_nan_and_skips_equal_infinities():
    from bench.lib.compiled import max_abs_diff

    a = {"rgb": torch.tensor([0.0, 1.0]), "depth": torch.tensor([float("inf"), 2.0])}
    assert max_abs_diff(a, {"rgb": torch.tensor([0.0, 1.5]), "depth": torch.tensor([float("inf"), 2.0])}) == 0.5
    assert max_abs_diff(a, {"rgb": torch.tensor([0.0, float("nan")]), "depth": a["depth"]}) == float("inf")
    with pytest.raises(ValueError, match="differ in shape"):
        max_abs_diff(torch.zeros(2), torch.zeros(3))


def test_readme_section_from_json(tmp_path, capsys):
    rows = [{"anchor": "TripoSR", "preset": "triposr", "case": "mesh grid 256^3", "theirs_s": 2.0, "ours_s": 0.5,
             "ratio": 4.0, "compiled_with": "mode='max-autotune-no-cudagraphs'", "compiled_s": 1.0,
             "compile_s": 60.0, "compiled_max_abs": 2e-6, "ratio_compiled": 2.0}]
    meta = {"machine": "x86_64", "cpu_count": 2, "torch": "2.x", "torch_threads": 2, "args": {"backend": "fast"},
            "when_utc": "2026-12-07 19:00:00", "command": "python -m bench.scripts.anchors --triposr T"}
    src, readme = tmp_path / "run.json", tmp_path / "README.md"
    src.write_text(__import__("json").dumps({"meta": meta, "rows": rows}))
    readme.write_text("intro\n<!-- anchors:start -->\nold\n<!-- anchors:end -->\nafter\n")
    assert anchors.main(["--from-json", str(src), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("after\n")
    assert "`python -m bench.scripts.anchors --triposr T`" in text and f"`{src}`" in text
    assert "| 1.000 s | 60.0 s | 2.00x | 2.0e-06 |" in text and "once per input shape" in text
    assert anchors.main(["--from-json", str(tmp_path / "missing.json")]) == 2
    assert "--from-json" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_reference_inductor_tiny_grid():
    """The real code generation (inductor, its default mode: max-autotune adds minutes) on the cheapest
    case, the tiny field's grid query: the compiled output matches the uncompiled reference."""
    name, (t_fn, o_fn, peer) = list(_tiny_cases().items())[-1]
    row = anchors._run_cases("ours", "tiny", {name: (t_fn, o_fn, peer)}, repeat=1, backend="fast", memory=False,
                             compile_kwargs={})[0]
    assert "compiled_error" not in row, row.get("compiled_error")
    assert row["compiled_max_abs"] <= 1e-5 and row["compiled_with"] == "inductor's default mode"
