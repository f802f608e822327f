"""Camera geometry in OpenLRM's conventions: the one module that data, model, render and api share.

(The camera *embedder*, a network, is ``lrm_fast/model/camera.py``.)

Conventions (OpenLRM ``datasets/cam_utils.py`` and ``runners/infer/lrm.py``):

* World: z-up. Camera-to-world matrices ``c2w [..., 4, 4]`` in Blender/OpenGL form: columns are
  the camera's x (right), y (up), z (backward) axes and its position; the camera looks along -z.
* Intrinsics ``[..., 4]`` = ``fx, fy, cx, cy`` divided by the image width (fx, cx) and height
  (fy, cy): resolution independent. OpenLRM's default: f = 0.75, c = 0.5.
* Canonical source camera: at distance ``d`` (2.0) on the -y axis, looking along +y at the
  origin, z up: ``c2w = [[1,0,0,0], [0,0,-1,-d], [0,1,0,0], [0,0,0,1]]``.
* Normalization (``camera_normalization_objaverse``): every pose of an object is left-multiplied
  by ``M = canonical @ inverse(source_pose)``, which maps the source camera to the canonical pose
  and moves the other views rigidly with it.
* Camera feature fed to the embedder: ``"principle"`` (OpenLRM, 16 numbers) = the 3x4 top rows of
  c2w flattened row-major + fx, fy, cx, cy; ``"paper"`` (LRM paper, 20) = the whole 4x4 + the 4.
"""
from __future__ import annotations

import math

import torch

FEATURE_DIMS = {"principle": 16, "paper": 20}


def canonical_pose(distance: float = 2.0, dtype=torch.float32, device=None) -> torch.Tensor:
    """OpenLRM's canonical source camera ``[4, 4]`` (see module docstring)."""
    return torch.tensor([[1, 0, 0, 0], [0, 0, -1, -distance], [0, 1, 0, 0], [0, 0, 0, 1]],
                        dtype=dtype, device=device)


def default_intrinsics(focal: float = 0.75, center: float = 0.5, dtype=torch.float32, device=None):
    """Normalized ``[4]`` intrinsics fx, fy, cx, cy (OpenLRM ``create_intrinsics(f=0.75, c=0.5)``)."""
    return torch.tensor([focal, focal, center, center], dtype=dtype, device=device)


def look_at(positions: torch.Tensor, target=None, up=None) -> torch.Tensor:
    """OpenGL c2w ``[..., 4, 4]`` for cameras at ``positions [..., 3]`` looking at ``target``
    with world ``up`` (z-up by default), as OpenLRM's ``center_looking_at_camera_pose``."""
    dtype, device = positions.dtype, positions.device
    target = torch.zeros(3, dtype=dtype, device=device) if target is None else torch.as_tensor(target, dtype=dtype, device=device)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=dtype, device=device) if up is None else torch.as_tensor(up, dtype=dtype, device=device)
    z = torch.nn.functional.normalize(positions - target, dim=-1)
    x = torch.nn.functional.normalize(torch.cross(up.expand_as(z), z, dim=-1), dim=-1)
    y = torch.nn.functional.normalize(torch.cross(z, x, dim=-1), dim=-1)
    c2w = torch.zeros(*positions.shape[:-1], 4, 4, dtype=dtype, device=device)
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = x, y, z, positions
    c2w[..., 3, 3] = 1.0
    return c2w


def orbit_cameras(azimuths, elevations, distance: float = 2.0, dtype=torch.float32, device=None):
    """c2w ``[V, 4, 4]`` on a sphere around the origin. Azimuth 0 deg = the canonical source view
    (camera on -y), increasing counter-clockwise seen from +z; elevation in degrees above the
    xy-plane."""
    az = torch.as_tensor(azimuths, dtype=torch.float64).reshape(-1) * (math.pi / 180)
    el = torch.as_tensor(elevations, dtype=torch.float64).reshape(-1) * (math.pi / 180)
    az, el = torch.broadcast_tensors(az, el)
    pos = torch.stack([distance * torch.cos(el) * torch.sin(az),
                       -distance * torch.cos(el) * torch.cos(az),
                       distance * torch.sin(el)], -1)
    return look_at(pos).to(dtype=dtype, device=device)


def normalize_cameras(source_c2w: torch.Tensor, c2ws: torch.Tensor, distance: float | None = 2.0):
    """Map ``source_c2w [..., 4, 4]`` to the canonical pose and move ``c2ws [..., V, 4, 4]`` with it.

    ``distance=None`` keeps the source camera's own distance to the origin ("auto" in OpenLRM).
    Returns the normalized ``c2ws``.
    """
    if distance is None:
        d = source_c2w[..., :3, 3].norm(dim=-1)
        canon = canonical_pose(1.0, source_c2w.dtype, source_c2w.device).expand(*d.shape, 4, 4).clone()
        canon[..., 1, 3] = -d
    else:
        canon = canonical_pose(distance, source_c2w.dtype, source_c2w.device)
    norm = canon @ torch.linalg.inv(source_c2w)
    return norm[..., None, :, :] @ c2ws


def camera_features(c2w: torch.Tensor, intrinsics: torch.Tensor, kind: str = "principle") -> torch.Tensor:
    """Raw camera feature ``[..., 16]`` (principle) or ``[..., 20]`` (paper); see module docstring."""
    if c2w.shape[-2:] != (4, 4):
        raise ValueError(f"camera c2w must be [..., 4, 4], got {tuple(c2w.shape)}")
    if intrinsics.shape[-1] != 4:
        raise ValueError(f"camera intrinsics must be [..., 4] (fx, fy, cx, cy), got {tuple(intrinsics.shape)}")
    rows = 3 if kind == "principle" else 4
    if kind not in FEATURE_DIMS:
        raise ValueError(f"unknown camera feature {kind!r} ({sorted(FEATURE_DIMS)})")
    ext = c2w[..., :rows, :].reshape(*c2w.shape[:-2], rows * 4)
    return torch.cat([ext, intrinsics.to(ext.dtype)], -1)
