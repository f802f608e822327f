"""Foundation: presets, the reference model end to end, determinism."""
import pytest
import torch

from lrm_fast.config import LRMConfig, PRESETS
from lrm_fast.model.camera import default_intrinsics, orbit_cameras
from lrm_fast.model.lrm import LRM, count_parameters

# (min, max) total parameters in millions: OpenLRM v1.1 model cards + the LRM paper.
EXPECTED_M = {"tiny": (0.01, 1.0), "demo": (1, 12), "small": (105, 117), "base": (250, 270), "large": (440, 465),
              "paper": (450, 550)}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_counts_on_meta(name):
    counts = count_parameters(LRMConfig.preset(name))
    lo, hi = EXPECTED_M[name]
    assert lo <= counts["total"] / 1e6 <= hi, counts
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_preset_shapes_follow_openlrm():
    base = LRMConfig.preset("base")
    assert (base.decoder.layers, base.decoder.dim, base.decoder.heads, base.triplane.channels,
            base.encoder.image_size) == (12, 768, 12, 48, 336)
    large = LRMConfig.preset("large")
    assert (large.decoder.layers, large.decoder.dim, large.triplane.channels, large.encoder.image_size) == (16, 1024, 80, 448)
    paper = LRMConfig.preset("paper")
    assert paper.camera.feature == "paper" and paper.encoder.kind == "dino" and paper.encoder.image_size == 512


def test_config_json_round_trip_and_errors():
    cfg = LRMConfig.preset("small")
    assert LRMConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown preset"):
        LRMConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown decoder config keys"):
        LRMConfig.from_dict({"decoder": {"widht": 3}})


def _inputs(B=2, V=2):
    img = torch.rand(B, 3, 28, 28)
    c2w = orbit_cameras([0, 120][:V], [10, 30][:V]).expand(B, -1, -1, -1)
    K = default_intrinsics().expand(B, V, 4)
    return img, c2w, K


def test_tiny_forward_backward_all_params_get_grads(tiny_model):
    img, c2w, K = _inputs()
    out = tiny_model(img, None, c2w, K, 32, jitter=True)
    assert out["rgb"].shape == (2, 2, 32, 32, 3) and out["planes"].shape == (2, 3, 8, 8, 8)
    loss = sum(v.float().mean() for v in out.values())
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in tiny_model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in tiny_model.parameters())


def test_same_seed_is_bit_identical(tiny_cfg):
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        m = LRM(tiny_cfg)
        img, c2w, K = _inputs()
        with torch.no_grad():
            outs.append(m(img, None, c2w, K, 16)["rgb"])
    assert torch.equal(outs[0], outs[1])


def test_reference_and_auto_backends_agree(tiny_model):
    img, c2w, K = _inputs(1, 1)
    with torch.no_grad():
        a = tiny_model.set_backend("reference")(img, None, c2w, K, 16)
        b = tiny_model.set_backend("auto")(img, None, c2w, K, 16)
    torch.testing.assert_close(a["planes"], b["planes"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a["rgb"], b["rgb"], atol=1e-4, rtol=1e-4)


def test_bad_inputs_name_the_problem(tiny_model):
    with pytest.raises(ValueError, match="28x28"):
        tiny_model.forward_planes(torch.rand(1, 3, 30, 30))
    with pytest.raises(ValueError, match=r"source camera feature must be \[B, 16\]"):
        tiny_model.forward_planes(torch.rand(1, 3, 28, 28), torch.zeros(1, 12))
    with pytest.raises(ValueError, match="NaN"):
        tiny_model.forward_planes(torch.rand(1, 3, 28, 28), torch.full((1, 16), float("nan")))


def test_encoder_drops_register_tokens(tiny_model):
    tokens = tiny_model.encoder(torch.rand(1, 3, 28, 28))
    assert tokens.shape == (1, 1 + 4, 32)  # CLS + 2x2 patches; the 4 registers are gone
