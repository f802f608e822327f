"""Proven density bounds (``lrm_fast/field/bounds.py``) on TripoSR's field: SiLU layers, exp density.

Each bound must hold for the field as it is computed (fp32): many random points inside each box and
its corners never leave ``[lo, hi]``, for the interval bound and CROWN, raw and activated, on a
random TripoSR-shaped field (its 10-layer SiLU MLP over concatenated planes, exp density, radius-0.87
box) and on the fitted TripoSR field (``bench/lib/fitted_field.py``)."""
from __future__ import annotations

import pytest
import torch

from lrm_fast.field.bounds import _relax, field_density_bounds


@pytest.mark.parametrize("act", ["silu", "softplus", "relu"])
def test_linear_relaxation_holds_on_its_interval(act):
    from lrm_fast.field.activations import HIDDEN

    g = torch.Generator().manual_seed(0)
    centre = torch.randn(2000, dtype=torch.float64, generator=g) * 4
    width = torch.rand(2000, dtype=torch.float64, generator=g) ** 3 * 20   # narrow to very wide
    width[:20] = 0                                                          # a point
    l, u = centre - width / 2, centre + width / 2
    a_lo, b_lo, a_up, b_up = _relax(act, l, u)
    z = l[:, None] + (u - l)[:, None] * torch.rand(2000, 257, dtype=torch.float64, generator=g)
    z = torch.cat([z, l[:, None], u[:, None], torch.full_like(l[:, None], -1.2784645427610738).clamp(l[:, None], u[:, None])], 1)
    f = HIDDEN[act].fn(z)
    tol = 1e-12 * (1 + z.abs())
    assert (f <= a_up[:, None] * z + b_up[:, None] + tol).all()
    assert (f >= a_lo[:, None] * z + b_lo[:, None] - tol).all()
    # narrow boxes: the two lines close in on the function (quadratically for the smooth ones)
    narrow = (width > 0) & (width < 1e-2)
    gap = (a_up * u + b_up - a_lo * u - b_lo)[narrow]
    assert (gap < (1e-2 if act == "relu" else 1e-5)).all()


def _cells(lo: float, hi: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    e = torch.linspace(lo, hi, n + 1)
    i = torch.arange(n)
    ii, jj, kk = torch.meshgrid(i, i, i, indexing="ij")
    return (torch.stack([e[ii], e[jj], e[kk]], -1).reshape(-1, 3),
            torch.stack([e[ii + 1], e[jj + 1], e[kk + 1]], -1).reshape(-1, 3))


def _check_contains(field, planes, lo, hi, crown: bool, points: int = 64):
    """Raw and activated bounds over boxes ``lo/hi [M, 3]`` hold at ``points`` random points inside each
    box and at its 8 corners; returns the raw bounds' widths."""
    M = lo.shape[0]
    rl, rh = field_density_bounds(field, planes, crown=crown, raw=True)(lo, hi)
    dl, dh = field.density(rl), field.density(rh)       # what raw=False returns
    if not crown:
        dl2, dh2 = field_density_bounds(field, planes)(lo, hi)
        assert torch.equal(dl2, dl) and torch.equal(dh2, dh)
    g = torch.Generator().manual_seed(1)
    t = torch.rand(M, points, 3, generator=g)
    corners = torch.tensor([[a, b, c] for a in (0., 1.) for b in (0., 1.) for c in (0., 1.)])
    t = torch.cat([t, corners.expand(M, -1, -1)], 1)
    pts = lo[:, None] + t * (hi - lo)[:, None]
    with torch.inference_mode():
        raw = field(planes, pts.reshape(1, -1, 3))[0, :, 0].reshape(M, -1)
        dens = field.density(raw)
    assert not rl.isnan().any() and not rh.isnan().any()
    assert (raw <= rh[:, None]).all() and (raw >= rl[:, None]).all(), float((raw - rh[:, None]).max())
    assert (dens <= dh[:, None]).all() and (dens >= dl[:, None]).all()
    return rh - rl


def _triposr_field(seed: int = 0):
    """A random TripoSR-shaped field: 10 x 64 SiLU MLP over 3 concatenated planes, exp density, 1/0.87."""
    from lrm_fast.config import LRMConfig
    from lrm_fast.field.triplane import TriplaneField

    cfg = LRMConfig.preset("triposr")
    torch.manual_seed(seed)
    field = TriplaneField(8, cfg.field).eval()
    for m in field.linears:                       # TripoSR's own initialisation (NeRFMLP)
        torch.nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
    planes = torch.randn(1, 3, 8, 16, 16, generator=torch.Generator().manual_seed(seed))
    return field, planes, cfg.render


def test_random_triposr_shaped_field_bounds_hold():
    field, planes, rc = _triposr_field()
    assert len(field.linears) == 10 and field.cfg.activation == "silu" and field.cfg.density_activation == "exp"
    lo, hi = _cells(rc.box_min, rc.box_max, 4)                   # cells of a 4^3 grid over the box
    g = torch.Generator().manual_seed(2)
    small = torch.rand(24, 3, generator=g) * 1.6 - 0.8             # and boxes of 1/64 of a texel
    lo, hi = torch.cat([lo, small]), torch.cat([hi, small + 0.0017])
    w_int = _check_contains(field, planes, lo, hi, crown=False)
    w_crown = _check_contains(field, planes, lo, hi, crown=True)
    assert (w_crown <= w_int * (1 + 1e-5) + 1e-4).all()            # CROWN keeps the tighter of the two
    assert w_crown[-24:].median() < 1e-3 * w_int[-24:].median()    # and is far tighter on small boxes


def test_fitted_triposr_field_bounds_hold():
    from bench.lib.fitted_field import load_fitted_field

    planes, model = load_fitted_field(preset="triposr")
    rc = model.cfg.render
    lo, hi = _cells(rc.box_min, rc.box_max, 4)
    g = torch.Generator().manual_seed(3)
    small = torch.rand(32, 3, generator=g) * 1.4 - 0.7            # 1/16 of a texel: CROWN is informative
    lo, hi = torch.cat([lo, small]), torch.cat([hi, small + 0.0017])
    _check_contains(model.field, planes, lo, hi, crown=False, points=32)
    w = _check_contains(model.field, planes, lo, hi, crown=True, points=32)
    assert w[-32:].median() < 5.0     # raw density units; the interval bound is ~1e5 wide there
