"""Multi-view dataset in OpenLRM's Objaverse layout (``rgba/*.png``, ``pose/*.npy``, ``intrinsics.npy``).

One item = one object: a *source* view (the model input, prepared by the very function inference
uses, ``lrm_fast.io.images.preprocess``, with the model's background and foreground ratio) and
``side_views`` further views, all supervised (OpenLRM supervises the source view too). Cameras are
normalized so the source camera is OpenLRM's canonical pose (``lrm_fast.cameras.normalize_cameras``);
the source camera feature is ``camera_features(normalized source pose, intrinsics)``.

Supervision is decoupled from image size as in OpenLRM: each supervised view is resized to
``render_size`` and a random ``patch x patch`` crop of it is supervised; the crop's pixel
coordinates go to the renderer as ``pixels [V, P*P, 2]`` (row, col) at ``render_size`` resolution.
Each supervised view gets a random background (OpenLRM: one of 0, 0.5, 1) so opacity is learnt.

Sampling is a pure function of ``(seed, epoch, index)`` -- no hidden RNG state -- so a resumed or
distributed run sees exactly the same items.

Missing or corrupt files: the item is skipped (the next object is used instead), a warning is
logged once per object, and ``skipped`` counts them; only a dataset with no loadable object raises.
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F

from ..io.images import preprocess
from ..cameras import camera_features, normalize_cameras

log = logging.getLogger(__name__)


def list_objects(root: str, meta: str | None = None) -> list[str]:
    """uids from ``meta`` (a JSON list; default ``<root>/meta.json``) or, without one, the sub-folders
    that hold an ``intrinsics.npy``."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root not found: {root}")
    meta = meta or os.path.join(root, "meta.json")
    if os.path.exists(meta):
        with open(meta) as f:
            uids = json.load(f)
        if not isinstance(uids, list) or not all(isinstance(u, str) for u in uids):
            raise ValueError(f"{meta}: expected a JSON list of object ids")
    else:
        uids = sorted(d for d in os.listdir(root) if not d.endswith(".tmp") and os.path.exists(os.path.join(root, d, "intrinsics.npy")))
    if not uids:
        raise FileNotFoundError(f"{root}: no objects (no meta.json and no <uid>/intrinsics.npy folders)")
    return uids


def load_view(folder: str, view: int):
    """rgba ``[4, H, W]`` float in [0, 1] (straight alpha) and c2w ``[4, 4]`` of one view."""
    from PIL import Image

    png = os.path.join(folder, "rgba", f"{view:03d}.png")
    pose_path = os.path.join(folder, "pose", f"{view:03d}.npy")
    with Image.open(png) as im:
        if im.mode != "RGBA":
            raise ValueError(f"{png}: expected an RGBA image, got mode {im.mode}")
        rgba = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
    pose = np.load(pose_path, allow_pickle=False)
    if pose.shape not in ((3, 4), (4, 4)):
        raise ValueError(f"{pose_path}: pose must be [3, 4] or [4, 4] c2w, got {pose.shape}")
    c2w = torch.eye(4)
    c2w[:3] = torch.from_numpy(pose[:3].astype(np.float32))
    if not torch.isfinite(c2w).all():
        raise ValueError(f"{pose_path}: pose has NaN/inf")
    return rgba, c2w


def load_intrinsics(folder: str) -> torch.Tensor:
    """OpenLRM ``intrinsics.npy`` ``[3, 2]`` (pixels: [[fx, fy], [cx, cy], [W, H]]) -> normalized
    ``[4]`` fx/W, fy/H, cx/W, cy/H."""
    path = os.path.join(folder, "intrinsics.npy")
    K = np.load(path, allow_pickle=False)
    if K.shape != (3, 2):
        raise ValueError(f"{path}: intrinsics must be [3, 2] [[fx, fy], [cx, cy], [W, H]], got {K.shape}")
    (fx, fy), (cx, cy), (w, h) = K.astype(np.float64)
    if w <= 0 or h <= 0:
        raise ValueError(f"{path}: image size must be positive, got {w}x{h}")
    return torch.tensor([fx / w, fy / h, cx / w, cy / h], dtype=torch.float32)


def resize_rgba(rgba: torch.Tensor, size: int) -> torch.Tensor:
    """``[..., 4, H, W]`` straight-alpha -> ``[..., 4, size, size]``; color is resized premultiplied
    (so background never bleeds into edges) with antialiasing."""
    if rgba.shape[-1] == size and rgba.shape[-2] == size:
        return rgba
    lead = rgba.shape[:-3]
    x = rgba.reshape(-1, *rgba.shape[-3:])
    pre = torch.cat([x[:, :3] * x[:, 3:], x[:, 3:]], 1)
    pre = F.interpolate(pre, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    a = pre[:, 3:]
    rgb = torch.where(a > 1e-6, pre[:, :3] / a.clamp_min(1e-6), torch.zeros_like(pre[:, :3])).clamp(0, 1)
    return torch.cat([rgb, a], 1).reshape(*lead, 4, size, size)


def composite(rgba: torch.Tensor, bg) -> torch.Tensor:
    """straight-alpha ``[..., 4, H, W]`` over background (number or ``[..., 3]``) -> ``[..., 3, H, W]``."""
    bg = torch.as_tensor(bg, dtype=rgba.dtype)
    if bg.dim() > 0:
        bg = bg[..., :, None, None]
    return rgba[..., :3, :, :] * rgba[..., 3:, :, :] + bg * (1 - rgba[..., 3:, :, :])


class MultiViewDataset(torch.utils.data.Dataset):
    """Objects in OpenLRM's layout -> training items.

    Item (``V = 1 + side_views``, ``P = patch``, ``R = P * P``):

    * ``source_image [3, S, S]`` in [0, 1] on white (S = ``source_size``), ``source_camera [16|20]``;
    * ``c2w [V, 4, 4]`` normalized, ``intrinsics [V, 4]``; view 0 is the source view;
    * ``pixels [V, R, 2]`` (row, col) at ``render_size``; ``rgb [V, R, 3]`` target on ``bg``;
      ``alpha [V, R]``; ``bg [V, 3]``;
    * ``index`` (the object actually used), ``uid``.

    ``patch=None`` supervises the whole ``render_size`` view (evaluation).
    """

    def __init__(self, root: str, meta: str | None = None, side_views: int = 3, source_size: int = 64,
                 render_size: int = 64, patch: int | None = 32, seed: int = 0, num_views: int | None = None,
                 backgrounds=(0.0, 0.5, 1.0), camera_feature: str = "principle", distance: float = 2.0,
                 source_view: int | None = None, source_views: int | None = None,
                 source_background: float = 1.0, foreground_ratio: float = 0.0):
        self.root = root
        self.uids = list_objects(root, meta)
        self.side_views, self.source_size, self.render_size = side_views, source_size, render_size
        self.patch, self.seed, self.backgrounds = patch, seed, tuple(backgrounds)
        self.camera_feature, self.distance, self.source_view = camera_feature, distance, source_view
        # source_views = k: the source is one of views 0..k-1 (the views rendered at the source distance)
        self.source_views = source_views
        self.source_background, self.foreground_ratio = float(source_background), float(foreground_ratio)
        if patch is not None and not 1 <= patch <= render_size:
            raise ValueError(f"patch {patch} must be in [1, render_size={render_size}]")
        self.num_views = num_views
        self.epoch = 0
        self.skipped = 0
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.uids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _views_of(self, folder: str) -> int:
        if self.num_views is not None:
            return self.num_views
        d = os.path.join(folder, "rgba")
        if not os.path.isdir(d):
            raise FileNotFoundError(f"{d}: missing rgba folder")
        return len([f for f in os.listdir(d) if f.endswith(".png")])

    def __getitem__(self, index: int) -> dict:
        n = len(self.uids)
        for k in range(n):
            i = (index + k) % n
            if i in self._bad:
                continue
            try:
                return self._load(i)
            except (OSError, ValueError, KeyError, EOFError, SyntaxError) as e:  # PIL raises SyntaxError on bad PNG
                self._bad.add(i)
                self.skipped += 1
                log.warning("skipping object %s (%d skipped so far): %s", self.uids[i], self.skipped, e)
        raise RuntimeError(f"{self.root}: no loadable object ({self.skipped} skipped)")

    def _load(self, i: int) -> dict:
        uid = self.uids[i]
        folder = os.path.join(self.root, uid)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: object folder missing")
        rng = np.random.default_rng([self.seed, self.epoch, i])
        n_all = self._views_of(folder)
        V = 1 + self.side_views
        if n_all < V:
            raise ValueError(f"{folder}: has {n_all} views, need {V}")
        views = rng.choice(n_all, V, replace=False)
        if self.source_view is not None or self.source_views:
            src = self.source_view if self.source_view is not None else int(rng.integers(min(self.source_views, n_all)))
            rest = [v for v in range(n_all) if v != src]
            views = np.array([src] + list(rng.choice(rest, V - 1, replace=False)))
        K = load_intrinsics(folder)
        rgbas, poses = zip(*(load_view(folder, int(v)) for v in views))
        shapes = {tuple(r.shape) for r in rgbas}
        if len(shapes) != 1:
            raise ValueError(f"{folder}: views have different sizes {sorted(shapes)}")
        rgba = torch.stack(rgbas)                                       # [V, 4, H, W]
        c2w = normalize_cameras(poses[0], torch.stack(poses), self.distance)
        intr = K.expand(V, 4).clone()
        # exactly what reconstruct() feeds the encoder for this view's PNG
        source_image = preprocess(rgba[0].permute(1, 2, 0).numpy(), self.source_size, self.source_background,
                                  self.foreground_ratio)
        source_camera = camera_features(c2w[0], intr[0], self.camera_feature)

        render = resize_rgba(rgba, self.render_size)                    # [V, 4, S, S]
        S = self.render_size
        P = S if self.patch is None else self.patch
        anchors = rng.integers(0, S - P + 1, size=(V, 2))
        ar = torch.arange(P)
        rows = torch.from_numpy(anchors[:, 0])[:, None, None] + ar[None, :, None]
        cols = torch.from_numpy(anchors[:, 1])[:, None, None] + ar[None, None, :]
        rows, cols = torch.broadcast_tensors(rows, cols)                # [V, P, P]
        pixels = torch.stack([rows.reshape(V, -1), cols.reshape(V, -1)], -1)
        vidx = torch.arange(V)[:, None]
        crop = render.permute(0, 2, 3, 1)[vidx, pixels[..., 0], pixels[..., 1]]   # [V, R, 4]
        bg = torch.tensor(rng.choice(self.backgrounds, size=V), dtype=torch.float32)[:, None].expand(V, 3)
        rgb = crop[..., :3] * crop[..., 3:] + bg[:, None] * (1 - crop[..., 3:])
        return {"source_image": source_image, "source_camera": source_camera, "c2w": c2w,
                "intrinsics": intr, "pixels": pixels, "rgb": rgb, "alpha": crop[..., 3],
                "bg": bg.contiguous(), "index": i, "uid": uid}


def collate(items: list[dict]) -> dict:
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else (
            torch.tensor(vals) if isinstance(vals[0], int) else vals)
    return out
