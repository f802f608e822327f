"""Image loading and preprocessing (minimal version; the API issue extends it).

``load_image(x)`` accepts a path, PIL image, numpy array ``[H, W, 3|4]`` (uint8 or float in [0, 1])
or tensor ``[3|4, H, W]`` and returns float RGBA ``[H, W, 4]`` in [0, 1] (alpha 1 if absent).
``preprocess(rgba, size, background)`` composites on the background and resizes to ``size``.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F


def load_image(x) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if isinstance(x, (str, os.PathLike)):
        path = os.fspath(x)
        if not os.path.exists(path):
            raise FileNotFoundError(f"image file not found: {path}")
        try:
            with Image.open(path) as im:
                im.load()
                x = im.convert("RGBA") if im.mode not in ("RGB", "RGBA") else im.copy()
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{path}: not a readable image ({e})") from None
    if isinstance(x, Image.Image):
        x = np.asarray(x.convert("RGBA") if x.mode not in ("RGB", "RGBA") else x)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().permute(1, 2, 0).numpy() if x.dim() == 3 and x.shape[0] in (3, 4) else x.numpy()
    arr = np.asarray(x)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"image must be [H, W, 3|4], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    else:
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise ValueError("image array contains NaN or inf")
    if arr.shape[-1] == 3:
        arr = np.concatenate([arr, np.ones_like(arr[..., :1])], -1)
    return np.clip(arr, 0.0, 1.0)


def preprocess(rgba: np.ndarray, size: int, background: float = 1.0) -> torch.Tensor:
    """RGBA ``[H, W, 4]`` -> RGB tensor ``[3, size, size]`` composited on ``background``."""
    rgb = rgba[..., :3] * rgba[..., 3:] + background * (1.0 - rgba[..., 3:])
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t[0].clamp(0, 1)
