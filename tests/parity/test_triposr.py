"""Parity with TripoSR's own code (VAST-AI-Research/TripoSR at d26e331, transformers 4.35.0).

The fixture (``fixtures/triposr``) is a small TripoSR checkpoint in TripoSR's own layout
(``config.yaml`` + ``model.ckpt`` + the ViT ``config.json`` its yaml names) and ``stages.npz``: what
TripoSR's code computed from those files, stage by stage (``tools/parity/triposr.py``; how to
regenerate: ``tools/parity/README.md``). Here the same folder goes through the path a user takes,
``lrm_fast.load_model(folder, device="cpu", dtype="float32", backend=...)``, for both backends, and
every stage is compared: encoder tokens, triplanes, the field at points, the density grid its mesh
extraction queries, camera rays, renders (with rays that miss the box), and a mesh (scikit-image's
marching cubes on its grid vs ours). The field / grid / renders are checked twice: from our
triplanes (end to end) and from TripoSR's triplanes (the stage alone).

Tolerances (fp32, CPU): 3e-5 for tokens and planes, 2e-5 for point outputs (density logits and
colors absolute; the activated density exp(x - 1) relative, since it reaches ~2e3), 1e-4 for
renders and mesh vertices. TripoSR has no camera input, so there is no camera-embedding stage.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import lrm_fast
from lrm_fast.model.camera import default_intrinsics, orbit_cameras
from lrm_fast.ops import generate_rays
from tests._twin import density_grid_of, maxdiff, maxrel

FIXTURE = Path(__file__).parent / "fixtures" / "triposr"
TOL_TOKENS = 3e-5
TOL_PLANES = 3e-5
TOL_POINTS = 2e-5
TOL_RENDER = 1e-4
TOL_MESH = 1e-4


@pytest.fixture(scope="module")
def stages() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "stages.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((FIXTURE / "meta.json").read_text())


@pytest.fixture(scope="module", params=["reference", "auto"])
def model(request):
    return lrm_fast.load_model(str(FIXTURE), device="cpu", dtype="float32", backend=request.param)


def _ours_to_theirs(planes: torch.Tensor) -> torch.Tensor:
    """Our triplane layout -> TripoSR's (plane 2 is stored transposed, TriplaneConfig.plane_layout)."""
    return torch.stack([planes[:, 0], planes[:, 1], planes[:, 2].transpose(-1, -2)], 1)


_theirs_to_ours = _ours_to_theirs  # a transpose is its own inverse


@pytest.fixture(scope="module")
def planes(model, stages):
    """Our triplanes (end to end) and TripoSR's, both in our layout."""
    with torch.inference_mode():
        ours = model.forward_planes(torch.from_numpy(stages["image"]))
    return {"ours": ours, "theirs": _theirs_to_ours(torch.from_numpy(stages["scene_codes"]))}


def test_fixture_pins_the_original(meta):
    assert meta["commit"].startswith("d26e331")
    assert meta["versions"]["transformers"] == "4.35.0"
    sizes = sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file())
    assert sizes <= 2 * 1024 * 1024, sizes


def test_config_comes_from_its_files(model, meta):
    """Heads, eps, patch size and MLP width of the image tokenizer come from the ViT config.json the
    yaml names (4 heads of 16: not width / 64); the rest from config.yaml."""
    cfg = model.cfg
    assert model.checkpoint_format == "triposr"
    assert cfg.encoder.image_size == meta["cond_image_size"] == 48
    assert cfg.encoder.norm_eps == 1e-12
    assert cfg.encoder.overrides == dict(embed_dim=64, depth=2, num_heads=4, patch_size=8, mlp_ratio=2.0)
    assert all(m.eps == 1e-12 for m in model.encoder.vit.modules() if isinstance(m, torch.nn.LayerNorm))
    assert (cfg.decoder.dim, cfg.decoder.heads, cfg.decoder.layers, cfg.decoder.in_norm_groups) == (64, 4, 2, 8)
    assert (cfg.triplane.low_res, cfg.triplane.channels, cfg.field.layers, cfg.field.hidden) == (4, 8, 4, 32)
    assert cfg.render.samples_per_ray == 64 and cfg.render.box_max == 0.87
    assert (cfg.render.box_shrink, cfg.render.min_span) == (1e-3, 0.01)


def test_encoder_tokens(model, stages):
    with torch.inference_mode():
        tokens = model.encoder(torch.from_numpy(stages["image"]))
    assert maxdiff(tokens, stages["tokens"]) <= TOL_TOKENS


def test_triplanes(planes, stages):
    assert maxdiff(_ours_to_theirs(planes["ours"]), stages["scene_codes"]) <= TOL_PLANES


@pytest.mark.parametrize("source", ["theirs", "ours"])
def test_field_at_points(model, planes, stages, source):
    pts = torch.from_numpy(stages["points"])[None]
    with torch.inference_mode():
        raw = model.field(planes[source], pts)[0]
        density, rgb = model.field.query(planes[source], pts)
    assert maxdiff(raw[:, 0], stages["point_density_raw"]) <= TOL_POINTS
    assert maxdiff(raw[:, 1:4], stages["point_features"]) <= TOL_POINTS
    assert maxrel(density[0], stages["point_density"]) <= TOL_POINTS
    assert maxdiff(rgb[0], stages["point_color"]) <= TOL_POINTS


@pytest.mark.parametrize("source", ["theirs", "ours"])
def test_density_grid(model, planes, stages, source):
    """The grid TripoSR's extract_mesh queries (its MarchingCubeHelper's vertices over the box)."""
    want = stages["density_grid"]
    assert maxrel(density_grid_of(model, planes[source], want.shape[0]), want) <= TOL_POINTS


def _views(meta):
    for k, v in enumerate(meta["render"]["views"]):
        n = v["n_views"]
        yield k, np.linspace(0.0, 360.0, n + 1)[:n], v["elevation_deg"], v["distance"], v["resolution"]


def test_camera_rays(model, stages, meta):
    """Our orbit cameras (azimuth 0 = the input view) give TripoSR's get_spherical_cameras rays."""
    cam = model.cfg.camera
    assert abs(cam.source_focal - 0.5 / np.tan(np.radians(meta["render"]["fovy_deg"] / 2))) < 1e-6
    for k, az, el, dist, res in _views(meta):
        c2w = orbit_cameras(az + cam.front_azimuth, el, dist)
        K = default_intrinsics(cam.source_focal).expand(len(az), 4)
        o, d = generate_rays(c2w, K, res, res)
        assert maxdiff(o.reshape(len(az), res, res, 3), stages[f"rays_o_{k}"]) <= TOL_POINTS
        assert maxdiff(d.reshape(len(az), res, res, 3), stages[f"rays_d_{k}"]) <= TOL_POINTS


@pytest.mark.parametrize("source", ["theirs", "ours"])
def test_renders(model, planes, stages, meta, source):
    """All views of a set in one call; set 1 is far enough that about a fifth of the rays miss the
    box (TripoSR: white background), 16 of them only grazing it (far - near <= 0.01)."""
    rec = lrm_fast.Reconstruction(model, planes[source])
    misses = 0
    for k, az, el, dist, res in _views(meta):
        out = rec.render(azimuths=az, elevations=el, distance=dist, resolution=res)
        rgb = out["rgb"][0]
        assert maxdiff(rgb, stages[f"render_{k}"]) <= TOL_RENDER
        miss = torch.from_numpy(stages[f"miss_{k}"])
        assert torch.equal(out["opacity"][0] == 0, miss)
        assert (rgb[miss] == 1.0).all()
        misses += int(miss.sum())
    assert misses > 0


@pytest.mark.parametrize("source", ["theirs", "ours"])
def test_mesh(model, planes, stages, meta, source):
    """scikit-image's marching cubes on TripoSR's density grid (what its extract_mesh queries;
    TripoSR itself runs torchmcubes on it) vs our mesh from the public API, same level."""
    from skimage import measure

    res, level = meta["mesh"]["resolution"], meta["mesh"]["threshold"]
    r = model.cfg.render.box_max
    grid = stages["density_grid"]
    verts, faces, _, _ = measure.marching_cubes(grid, level=level, allow_degenerate=False)
    verts = verts / (res - 1) * (2 * r) - r                  # TripoSR: v / (res - 1), then to (-r, r)
    mesh = lrm_fast.Reconstruction(model, planes[source]).mesh(resolution=res, threshold=level)
    assert len(faces) > 50
    assert mesh.vertices.shape == verts.shape and mesh.faces.shape == faces.shape
    assert np.array_equal(np.asarray(mesh.faces), faces[:, ::-1])   # same triangles, outward winding
    assert np.abs(np.asarray(mesh.vertices) - verts).max() <= TOL_MESH


# -- loading: offline ViT config, one-line errors --------------------------------------------------------------
def _copy(tmp_path) -> Path:
    dst = tmp_path / "triposr"
    shutil.copytree(FIXTURE, dst)
    return dst


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg, msg
    return msg


def test_released_vit_is_built_in(tmp_path):
    """The released config.yaml names facebook/dino-vitb16 on the hub; offline we use its facts
    (12 heads, eps 1e-12, patch 16) unless a local config.json is found."""
    from lrm_fast.io.triposr import DINO_VITB16_CONFIG, triposr_vit_config

    vit, src = triposr_vit_config({"image_tokenizer": {"pretrained_model_name_or_path": "facebook/dino-vitb16"}},
                                  str(tmp_path))
    for k in ("hidden_size", "num_attention_heads", "num_hidden_layers", "patch_size", "layer_norm_eps"):
        assert vit[k] == DINO_VITB16_CONFIG[k]
    assert (DINO_VITB16_CONFIG["num_attention_heads"], DINO_VITB16_CONFIG["layer_norm_eps"]) == (12, 1e-12)
    # a local folder named like the hub repo, next to config.yaml, wins
    local = tmp_path / "facebook" / "dino-vitb16"
    local.mkdir(parents=True)
    (local / "config.json").write_text(json.dumps({**DINO_VITB16_CONFIG, "num_attention_heads": 6}))
    vit, src = triposr_vit_config({"image_tokenizer": {"pretrained_model_name_or_path": "facebook/dino-vitb16"}},
                                  str(tmp_path))
    assert vit["num_attention_heads"] == 6 and src == str(local / "config.json")


def test_missing_vit_config_is_one_line_error(tmp_path):
    d = _copy(tmp_path)
    shutil.rmtree(d / "vit")
    with pytest.raises(FileNotFoundError) as e:
        lrm_fast.load_model(str(d), device="cpu", dtype="float32")
    assert "'vit'" in _one_line(e.value) and "pretrained_model_name_or_path" in str(e.value)
    # named as the release does, the built-in ViT-B/16 facts apply, and this checkpoint's small ViT
    # does not fit them: the error names the key
    (d / "config.yaml").write_text((d / "config.yaml").read_text().replace('"vit"', '"facebook/dino-vitb16"'))
    with pytest.raises(ValueError) as e:
        lrm_fast.load_model(str(d), device="cpu", dtype="float32")
    assert "image_tokenizer.model.embeddings.patch_embeddings.projection.weight" in _one_line(e.value)


@pytest.mark.parametrize("case", ["missing", "shape"])
def test_bad_checkpoint_is_one_line_error(tmp_path, case):
    d = _copy(tmp_path)
    sd = torch.load(d / "model.ckpt", map_location="cpu", weights_only=True)
    if case == "missing":
        del sd["backbone.transformer_blocks.1.norm3.weight"]
    else:
        sd["decoder.layers.2.weight"] = sd["decoder.layers.2.weight"][:, :-1]
    torch.save(sd, d / "model.ckpt")
    with pytest.raises((ValueError, KeyError)) as e:
        lrm_fast.load_model(str(d), device="cpu", dtype="float32")
    msg = _one_line(e.value)
    assert ("layers.1.norm3.weight" if case == "missing" else "layers.2.weight") in msg


# -- sensitivity: plausible re-implementation bugs must move some stage by >= 10x its tolerance ------------------
def _stage_errors(model, stages, meta) -> dict[str, float]:
    """Every stage's max difference from TripoSR's, divided by its tolerance (the mesh: inf when
    marching cubes gives another topology)."""
    from skimage import measure

    out = {}
    with torch.inference_mode():
        img = torch.from_numpy(stages["image"])
        out["tokens"] = maxdiff(model.encoder(img), stages["tokens"]) / TOL_TOKENS
        ours = model.forward_planes(img)
        out["planes"] = maxdiff(_ours_to_theirs(ours), stages["scene_codes"]) / TOL_PLANES
        theirs = _theirs_to_ours(torch.from_numpy(stages["scene_codes"]))
        pts = torch.from_numpy(stages["points"])[None]
        for name, P in (("theirs", theirs), ("ours", ours)):
            raw = model.field(P, pts)[0]
            dens, rgb = model.field.query(P, pts)
            out[f"field ({name} planes)"] = max(
                maxdiff(raw[:, 0], stages["point_density_raw"]), maxdiff(raw[:, 1:4], stages["point_features"]),
                maxrel(dens[0], stages["point_density"]), maxdiff(rgb[0], stages["point_color"])) / TOL_POINTS
            want = stages["density_grid"]
            out[f"density grid ({name} planes)"] = maxrel(density_grid_of(model, P, want.shape[0]), want) / TOL_POINTS
            rec = lrm_fast.Reconstruction(model, P)
            out[f"renders ({name} planes)"] = max(
                maxdiff(rec.render(azimuths=az, elevations=el, distance=dist, resolution=res)["rgb"][0],
                         stages[f"render_{k}"]) for k, az, el, dist, res in _views(meta)) / TOL_RENDER
        res, level = meta["mesh"]["resolution"], meta["mesh"]["threshold"]
        r = model.cfg.render.box_max
        verts = measure.marching_cubes(stages["density_grid"], level=level, allow_degenerate=False)[0]
        verts = verts / (res - 1) * (2 * r) - r
        try:
            mesh = lrm_fast.Reconstruction(model, ours).mesh(resolution=res, threshold=level)
            v = np.asarray(mesh.vertices)
            out["mesh (ours)"] = (np.abs(v - verts).max() / TOL_MESH) if v.shape == verts.shape else float("inf")
        except ValueError:  # empty / full grid at this level
            out["mesh (ours)"] = float("inf")
    return out


def _swap_planes_01(model, mp):
    fwd = type(model.field).forward
    mp.setattr(model.field, "forward", lambda planes, pts: fwd(model.field, planes[:, [1, 0, 2]], pts))


def _align_corners(model, mp):
    gs = torch.nn.functional.grid_sample
    mp.setattr(torch.nn.functional, "grid_sample", lambda *a, **k: gs(*a, **{**k, "align_corners": True}))


def _pos_embed_to_size(model, mp):
    """transformers >= 4.4x resample the ViT position grid to a target size, not by (g + 0.1) / G."""
    from lrm_fast.io import vit_weights

    def by_size(pos, new, offset=0.1):
        G = int(round(pos.shape[1] ** 0.5))
        if G == new:
            return pos
        grid = pos.reshape(1, G, G, -1).permute(0, 3, 1, 2)
        out = torch.nn.functional.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
        return out.permute(0, 2, 3, 1).reshape(1, new * new, -1)
    mp.setattr(vit_weights, "resample_grid", by_size)
    return lrm_fast.load_model(str(FIXTURE), device="cpu", dtype="float32", backend="reference")


def _vit_heads_from_width(model, mp):
    for blk in model.encoder.vit.blocks:  # width 64 / 64 = 1 head instead of the config's 4
        blk.attn.num_heads, blk.attn.head_dim = 1, 64
        blk.attn.scale = 64 ** -0.5


def _no_attention_scale(model, mp):
    from lrm_fast.model import decoder

    att = decoder.attention
    mp.setattr(decoder, "attention", lambda q, k, v, backend="auto": att(q * q.shape[-1] ** 0.5, k, v, backend))


def _cross_before_self(model, mp):
    from lrm_fast.model import decoder

    def fwd(self, x, cond):
        x = x + self.cross_attn(self.norm1(x), cond)
        x = x + self.self_attn(self.norm2(x))
        return x + self.mlp(self.norm3(x))
    mp.setattr(decoder.TripoSRBlock, "forward", fwd)


def _geglu_halves_swapped(model, mp):
    from lrm_fast.model import decoder

    def fwd(self, x):
        gate, a = self.proj(x).chunk(2, dim=-1)
        return a * torch.nn.functional.gelu(gate)
    mp.setattr(decoder.GEGLU, "forward", fwd)


def _no_imagenet_norm(model, mp):
    model.encoder.normalize = False


def _final_layernorm_kept(model, mp):
    t = model.transformer  # the LayerNorm OpenLRM's decoder ends with, after the blocks (before proj_out)
    t.proj_out = torch.nn.Sequential(torch.nn.LayerNorm(model.cfg.decoder.dim, eps=1e-5), t.proj_out)


def _step_scaled_by_span(model, mp):
    """delta = (far - near) / S, as a textbook NeRF would, instead of TripoSR's 1 / S."""
    from lrm_fast.render import marching as renderer   # the uniform marcher composites

    comp = renderer.composite

    def f(rgb, sigma, deltas, depths, bg, **kw):
        span = (depths[:, 1:2] - depths[:, :1]).expand_as(deltas) if depths.shape[1] > 1 else deltas
        return comp(rgb, sigma, span, depths, bg, **kw)
    mp.setattr(renderer, "composite", f)


def _box_not_shrunk(model, mp):
    model.renderer.cfg.box_shrink = 0.0


def _grazing_rays_kept(model, mp):
    model.renderer.cfg.min_span = 0.0


def _black_background(model, mp):
    model.renderer.cfg.background = 0.0


def _softplus_density(model, mp):
    model.field.cfg.density_activation = "softplus"


def _no_coord_scale(model, mp):
    model.field.cfg.coord_scale = 1.0


MUTATIONS = {
    "plane order: planes 0 and 1 swapped": _swap_planes_01,
    "plane 2 not transposed (OpenLRM's plane layout)": lambda m, mp: setattr(m.upsampler, "transpose_plane2", False),
    "grid_sample align_corners=True": _align_corners,
    "ViT position embedding resampled to a target size (not scale (g + 0.1) / G)": _pos_embed_to_size,
    "ViT heads = width / 64 (not the ViT config's)": _vit_heads_from_width,
    "decoder attention without 1/sqrt(d)": _no_attention_scale,
    "cross-attention before self-attention": _cross_before_self,
    "GEGLU: value and gate halves swapped": _geglu_halves_swapped,
    "no ImageNet normalisation of the input": _no_imagenet_norm,
    "a final LayerNorm after the backbone blocks": _final_layernorm_kept,
    "step size (far - near) / S instead of 1 / S": _step_scaled_by_span,
    "box not shrunk by 1 - 1e-3": _box_not_shrunk,
    "grazing rays (far - near <= 0.01) not treated as misses": _grazing_rays_kept,
    "background black instead of white": _black_background,
    "density softplus instead of exp": _softplus_density,
    "world points not scaled by 1 / radius": _no_coord_scale,
}


def _mutated_errors(name, stages, meta):
    with pytest.MonkeyPatch.context() as mp:
        model = lrm_fast.load_model(str(FIXTURE), device="cpu", dtype="float32", backend="reference")
        model = MUTATIONS[name](model, mp) or model
        return _stage_errors(model, stages, meta)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutation_is_caught(name, stages, meta):
    errs = _mutated_errors(name, stages, meta)
    worst = max(errs, key=errs.get)
    assert errs[worst] >= 10, f"{name}: largest move {errs[worst]:.3g} x tolerance ({worst})"


def mutation_table() -> str:
    """Markdown: for each mutation, every stage it moves by >= 10x its tolerance, with the factor
    ("topology": our mesh's marching cubes gives other triangles)."""
    with np.load(FIXTURE / "stages.npz") as z:
        st = {k: z[k] for k in z.files}
    meta = json.loads((FIXTURE / "meta.json").read_text())
    rows = ["| mutation | stages moved (max difference / tolerance) |", "|---|---|"]
    for name in MUTATIONS:
        errs = _mutated_errors(name, st, meta)
        moved = [f"{k} {'topology' if v == float('inf') else f'{v:.2g}'}" for k, v in errs.items() if v >= 10]
        rows.append(f"| {name} | {'; '.join(moved)} |")
    return "\n".join(rows)


if __name__ == "__main__":  # PYTHONPATH=. python tests/parity/test_triposr.py  -> the mutation table
    print(mutation_table())


# -- GPU: the same fixture in bf16 / fp16 / fp32 ------------------------------------------------------------------
# Rule: on the GPU, at each dtype, the fast path (backend "auto") may differ from the truth by at
# most 2x what our pure-PyTorch reference path at that dtype on that GPU does, plus one unit of the
# dtype's precision at the stage's scale (max(1e-6, eps(dtype)) x scale). The truth: our reference
# in float64 on the CPU, which the fp32 tests above tie to TripoSR's own outputs. Low precision may
# cost what it costs in the reference, not more.
def _gpu_stage_outputs(model, stages, meta) -> dict[str, torch.Tensor]:
    dev, dt = next(model.parameters()).device, next(model.parameters()).dtype
    out = {}
    with torch.inference_mode():
        img = torch.from_numpy(stages["image"]).to(dev, dt)
        out["tokens"] = model.encoder(img).double().cpu()
        out["planes"] = model.forward_planes(img).double().cpu()
        theirs = _theirs_to_ours(torch.from_numpy(stages["scene_codes"])).to(dev, dt)
        pts = torch.from_numpy(stages["points"])[None].to(dev)
        dens, rgb = model.field.query(theirs, pts.to(dt) if dt == torch.float64 else pts)
        out["field density (theirs planes)"] = dens.double().cpu()
        out["field color (theirs planes)"] = rgb.double().cpu()
        rec = lrm_fast.Reconstruction(model, theirs)
        for k, az, el, dist, res in _views(meta):
            out[f"render {k} (theirs planes)"] = rec.render(azimuths=az, elevations=el, distance=dist,
                                                            resolution=res)["rgb"].double().cpu()
    return out


def _stage_err(name, a, b) -> float:
    if name.startswith("field density"):  # exp density: relative
        return ((a - b).abs() / b.abs().clamp_min(1e-6)).max().item()
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def float64_truth(stages, meta):
    model = lrm_fast.load_model(str(FIXTURE), device="cpu", dtype=torch.float64, backend="reference")
    truth = _gpu_stage_outputs(model, stages, meta)
    theirs = _theirs_to_ours(torch.from_numpy(stages["scene_codes"])).double()
    assert (truth["planes"] - theirs).abs().max() <= TOL_PLANES   # TripoSR's fp32 is this close to it
    return truth


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
def test_gpu_dtypes_within_rule(stages, meta, float64_truth, dtype):
    ref, fast = (_gpu_stage_outputs(lrm_fast.load_model(str(FIXTURE), device="cuda", dtype=dtype, backend=be),
                                    stages, meta) for be in ("reference", "auto"))
    unit = max(1e-6, torch.finfo(dtype).eps)
    report, bad = {}, []
    for name, t in float64_truth.items():
        e_ref, e_fast = _stage_err(name, ref[name], t), _stage_err(name, fast[name], t)
        scale = 1.0 if name.startswith("field density") else max(1.0, t.abs().max().item())
        report[name] = (e_ref, e_fast)
        if e_fast > 2 * e_ref + unit * scale:
            bad.append(f"{name}: auto {e_fast:.3g} > 2 x reference {e_ref:.3g} + {unit * scale:.2g}")
    print(f"\n{dtype} max error vs float64 (reference / auto): "
          + "; ".join(f"{k} {a:.2g} / {b:.2g}" for k, (a, b) in report.items()))
    assert not bad, f"{dtype}: " + "; ".join(bad)


RELEASED_CONFIG_YAML = """\
cond_image_size: 512
image_tokenizer_cls: tsr.models.tokenizers.image.DINOSingleImageTokenizer
image_tokenizer:
  pretrained_model_name_or_path: "facebook/dino-vitb16"
tokenizer_cls: tsr.models.tokenizers.triplane.Triplane1DTokenizer
tokenizer:
  plane_size: 32
  num_channels: 1024
backbone_cls: tsr.models.transformer.transformer_1d.Transformer1D
backbone:
  in_channels: ${tokenizer.num_channels}
  num_attention_heads: 16
  attention_head_dim: 64
  num_layers: 16
  cross_attention_dim: 768
post_processor_cls: tsr.models.network_utils.TriplaneUpsampleNetwork
post_processor:
  in_channels: 1024
  out_channels: 40
decoder_cls: tsr.models.network_utils.NeRFMLP
decoder:
  in_channels: 120
  n_neurons: 64
  n_hidden_layers: 9
  activation: silu
renderer_cls: tsr.models.nerf_renderer.TriplaneNeRFRenderer
renderer:
  radius: 0.87
  feature_reduction: concat
  density_activation: exp
  density_bias: -1.0
  num_samples_per_ray: 128
"""


def test_released_config_gives_the_triposr_preset(tmp_path):
    """stabilityai/TripoSR's config.yaml (its keys and values) with tensors of the released shapes
    (on the meta device: no memory) converts to exactly our ``triposr`` preset, offline."""
    import yaml

    from lrm_fast.config import LRMConfig
    from lrm_fast.io.triposr import _triposr_config, triposr_vit_config

    y = yaml.safe_load(RELEASED_CONFIG_YAML)
    meta = dict(device="meta")
    enc = {"embeddings.cls_token": torch.empty(1, 1, 768, **meta),
           "embeddings.patch_embeddings.projection.weight": torch.empty(768, 3, 16, 16, **meta)}
    enc.update({f"encoder.layer.{i}.intermediate.dense.weight": torch.empty(3072, 768, **meta) for i in range(12)})
    sd = {"tokenizer.embeddings": torch.empty(3, 1024, 32, 32, **meta),
          "post_processor.upsample.weight": torch.empty(1024, 40, 2, 2, **meta)}
    sd.update({f"backbone.transformer_blocks.{i}.norm1.weight": torch.empty(1024, **meta) for i in range(16)})
    sd.update({f"decoder.layers.{2 * i}.weight": torch.empty(64, 120 if i == 0 else 64, **meta) for i in range(10)})
    vit = triposr_vit_config(y, str(tmp_path))
    cfg = _triposr_config(y, None, enc, sd, vit)
    assert cfg.to_dict() == LRMConfig.preset("triposr").to_dict()
