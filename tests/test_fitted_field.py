"""The fitted-field benchmark fixtures (bench/lib/fitted_field.py): load as the base and triposr presets'
triplanes and fields, and are a real surface (density high inside the generator's object, ~0 outside;
PSNR stored)."""
import numpy as np
import pytest
import torch

from bench.lib.fitted_field import FIXTURE, fitted_object, fixture_facts, inside, load_fitted_field


def test_fixture_loads_as_base_field():
    planes, model = load_fitted_field()
    assert planes.shape == (1, 3, 48, 64, 64) and planes.dtype == torch.float32
    assert model.cfg.name == "base" and model.field.linears[0].weight.shape == (64, 144)
    facts = fixture_facts()
    assert min(facts["psnr_db"]) >= 22.0      # our renders vs the generator's exact ray casts


def test_triposr_fixture_loads_as_triposr_field():
    planes, model = load_fitted_field(preset="triposr")
    assert planes.shape == (1, 3, 40, 64, 64) and planes.dtype == torch.float32
    f = model.field
    assert model.cfg.name == "triposr" and f.linears[0].weight.shape == (64, 120) and len(f.linears) == 10
    assert (f.cfg.activation, f.cfg.density_activation, model.cfg.render.sampler) == ("silu", "exp", "triposr")
    facts = fixture_facts(preset="triposr")
    assert facts["preset"] == "triposr" and min(facts["psnr_db"]) >= 25.0


@pytest.mark.parametrize("preset", ["base", "triposr"])
def test_fixture_density_follows_the_objects_occupancy(preset):
    planes, model = load_fitted_field(preset=preset)
    prims = fitted_object()
    rng = np.random.default_rng(0)
    rc = model.cfg.render
    pts = rng.uniform(rc.box_min, rc.box_max, (20000, 3)).astype(np.float32)
    occ = inside(prims, pts)
    with torch.inference_mode():
        d, _ = model.field.query(planes, torch.from_numpy(pts)[None])
    above = d[0].numpy() > model.cfg.render.mesh_threshold
    assert occ.mean() > 0.03                       # the object is not tiny
    assert (above == occ).mean() > 0.98            # the mesh level set is the object's surface


def test_missing_fixture_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m bench.lib.fitted_field"):
        load_fitted_field(str(tmp_path / "nope.safetensors"))
    with pytest.raises(FileNotFoundError, match="--preset triposr"):
        load_fitted_field(str(tmp_path / "nope.safetensors"), preset="triposr")
    with pytest.raises(ValueError, match="no fitted field for preset 'small'"):
        load_fitted_field(preset="small")
