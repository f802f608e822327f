"""Comparison helpers the twin and parity tests share (one place for the max-difference report and
the "assert close, naming the tensor" message). Import as ``from tests._twin import ...`` (the
suite runs from the repository root, as ``bench/`` imports ``bench.conftest``)."""
from __future__ import annotations

import torch

from lrm_fast.mesh import density_grid


def maxdiff(a, b) -> float:
    """max |a - b| in float32 (0 for empty tensors); the shapes must match."""
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return (a - b).abs().max().item() if a.numel() else 0.0


def maxrel(a, b, floor: float = 1e-6) -> float:
    """max |a - b| / max(|b|, floor) in float64; the shapes must match."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return ((a - b).abs() / b.abs().clamp_min(floor)).max().item() if a.numel() else 0.0


def assert_close(got, want, name: str, **tol) -> None:
    """``torch.testing.assert_close`` in float64 with a message that names the tensor."""
    torch.testing.assert_close(torch.as_tensor(got).double(), torch.as_tensor(want).double(), **tol,
                               msg=lambda m: f"{name}: {m}")


def density_grid_of(model, planes, res: int):
    """The model's activated density on the ``res^3`` grid its mesh extraction queries (what the
    originals' mesh code queries too), ``[res, res, res]``."""
    r = model.cfg.render
    with torch.inference_mode():
        grid, _ = density_grid(lambda p: model.field.query(planes, p[None])[0][0], res, r.box_min, r.box_max,
                               r.mesh_threshold)
    return grid
