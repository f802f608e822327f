"""Image loading, validation and preprocessing for the encoder.

``load_image(x)`` accepts a path, PIL image, numpy array or tensor and returns float RGBA
``[H, W, 4]`` in [0, 1] (alpha 1 where the input has none):

* paths: missing file -> ``FileNotFoundError``; not an image / truncated / unreadable ->
  ``ValueError`` naming the file. Decompression bombs (> ``MAX_PIXELS``) are refused.
* modes: grayscale (L, LA, I;16, I, F), palette (P, with its transparency), CMYK, 16-bit are
  converted; 16-bit values are scaled by 1/65535 (PIL's own RGB conversion would clip them).
* arrays: ``[H, W]``, ``[H, W, 1|2|3|4]`` (gray, gray+alpha, RGB, RGBA) or channels-first tensors
  ``[1|3|4, H, W]``; uint8 (/255), uint16 (/65535), bool, or float in [0, 1] (a float image in
  [0, 255] is refused with a hint, not silently clipped). NaN/inf -> ``ValueError``.
* size: a side < ``MIN_SIDE`` (32 px) -> ``ValueError``; a side > ``MAX_SIDE`` (4096 px) is
  downscaled first (the encoder sees <= 512 px anyway).

``preprocess(rgba, size, background, foreground_ratio)`` -> RGB ``[3, size, size]``:

1. if the image has an alpha channel that marks a foreground (some alpha < 1): crop to the
   alpha > 0.5 bounding box and pad it, centered, to a square whose side is
   ``bbox side / foreground_ratio`` (OpenLRM's ``recenter`` with border 0.2 = ratio 0.8; TripoSR's
   ``resize_foreground`` 0.85); ``foreground_ratio=0`` skips this.
2. composite RGB over ``background`` (the model's: OpenLRM white 1.0, TripoSR gray 0.5);
3. a non-square image is padded to a square with the background (never stretched);
4. resize to ``size`` (bilinear with antialias).

An image without alpha is used as is (no foreground detection): pass ``matting=`` a local
callable ``rgb [H, W, 3] float -> alpha [H, W]`` (e.g. a rembg session you created yourself) to
cut the background out; nothing is ever downloaded.

That is the ``"default"`` preprocessing (this project's own models). ``prepare(rgba, size, mode,
...)`` picks one of ``PREPROCESS`` by name; the other two reproduce the originals' own programs
from the file, step for step (their uint8 round trips included), so a checkpoint of that family
sees what it saw there (``tests/parity/test_preprocess.py`` checks both within 1/255):

* ``"triposr"`` (``preprocess_triposr``): TripoSR's ``run.py``; see that function.
* ``"openlrm"`` (``preprocess_openlrm``): OpenLRM's ``LRMInferrer.infer_single``; see that function.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..config import PREPROCESS

MIN_SIDE = 32
MAX_SIDE = 4096
MAX_PIXELS = 8192 * 8192  # larger files are refused before decoding


def _from_pil(im, name: str) -> np.ndarray:
    from PIL import Image

    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32)
        scale = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        g = np.clip(arr / scale, 0, 1)
        return np.stack([g, g, g, np.ones_like(g)], -1)
    if mode == "F":
        g = np.asarray(im, dtype=np.float32)
        return _from_array(np.stack([g, g, g], -1), name)
    if mode == "P":
        im = im.convert("RGBA")  # keeps the palette's transparency
    elif mode in ("LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
    elif mode not in ("RGB", "RGBA"):
        im = im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return _from_array(np.asarray(im), name)


def _from_array(arr: np.ndarray, name: str = "image") -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{name} must be [H, W], [H, W, 1|2|3|4] or a tensor [1|3|4, H, W], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or inf")
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"{name}: float values must be in [0, 1], got [{lo:.3g}, {hi:.3g}]"
                             + (" (divide by 255?)" if hi <= 255 and hi > 1.5 else ""))
    else:
        raise ValueError(f"{name}: unsupported dtype {arr.dtype} (uint8, uint16, bool or float in [0, 1])")
    c = arr.shape[-1]
    if c == 1:
        arr = np.concatenate([arr, arr, arr, np.ones_like(arr)], -1)
    elif c == 2:
        arr = np.concatenate([arr[..., :1]] * 3 + [arr[..., 1:]], -1)
    elif c == 3:
        arr = np.concatenate([arr, np.ones_like(arr[..., :1])], -1)
    return np.clip(arr, 0.0, 1.0)


def _check_size(arr: np.ndarray, name: str) -> np.ndarray:
    H, W = arr.shape[:2]
    if min(H, W) < MIN_SIDE:
        raise ValueError(f"{name} is too small ({W}x{H} px); need at least {MIN_SIDE} px per side")
    if max(H, W) > MAX_SIDE:  # downscale before anything else touches it
        s = MAX_SIDE / max(H, W)
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None]
        t = F.interpolate(t, size=(max(1, round(H * s)), max(1, round(W * s))), mode="bilinear",
                          align_corners=False, antialias=True)
        arr = t[0].permute(1, 2, 0).clamp(0, 1).numpy()
    return arr


def load_image(x, name: str | None = None) -> np.ndarray:
    """Any supported input (see module docstring) -> RGBA float32 ``[H, W, 4]`` in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(x, (str, os.PathLike)):
        path = os.fspath(x)
        name = name or path
        if not os.path.exists(path):
            raise FileNotFoundError(f"image file not found: {path}")
        if os.path.isdir(path):
            raise ValueError(f"{path}: is a folder, not an image file")
        try:
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ValueError(f"{path}: image is too large ({im.width}x{im.height} px; limit "
                                     f"{MAX_PIXELS} pixels)")
                im.load()
                arr = _from_pil(im, name)
        except UnidentifiedImageError:
            raise ValueError(f"{path}: not an image file (unrecognized format)") from None
        except Image.DecompressionBombError as e:
            raise ValueError(f"{path}: image is too large ({e})") from None
        except OSError as e:  # truncated or corrupt data
            raise ValueError(f"{path}: unreadable or truncated image ({e})") from None
        return _check_size(arr, name)
    name = name or "image"
    if isinstance(x, Image.Image):
        return _check_size(_from_pil(x, name), name)
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu")
        if t.is_floating_point():
            t = t.float()
        if t.dim() == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 2, 3, 4):
            t = t.permute(1, 2, 0)  # channels-first [C, H, W]
        x = t.numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected a path, PIL image, numpy array or tensor, got {type(x).__name__}")
    return _check_size(_from_array(x, name), name)


def has_foreground_alpha(rgba: np.ndarray) -> bool:
    """True if the alpha channel marks something (not all opaque)."""
    return bool((rgba[..., 3] < 0.999).any())


def recenter(rgba: np.ndarray, foreground_ratio: float) -> np.ndarray:
    """Crop to the alpha > 0.5 bounding box and pad (transparent) to a centered square whose side is
    ``max(bbox h, bbox w) / foreground_ratio``. ``[H, W, 4]`` -> ``[S, S, 4]``."""
    if not 0 < foreground_ratio <= 1:
        raise ValueError(f"foreground_ratio must be in (0, 1], got {foreground_ratio}")
    mask = rgba[..., 3] > 0.5
    if not mask.any():
        raise ValueError("the image's alpha channel is empty: no foreground object to reconstruct")
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = rgba[y0:y1, x0:x1]
    h, w = crop.shape[:2]
    side = max(int(np.ceil(max(h, w) / foreground_ratio)), h, w)
    out = np.zeros((side, side, 4), dtype=np.float32)
    oy, ox = (side - h) // 2, (side - w) // 2
    out[oy:oy + h, ox:ox + w] = crop
    return out


def preprocess(rgba: np.ndarray, size: int, background: float = 1.0, foreground_ratio: float = 0.0,
               matting: Callable[[np.ndarray], np.ndarray] | None = None) -> torch.Tensor:
    """RGBA ``[H, W, 4]`` in [0, 1] -> RGB ``[3, size, size]`` for the encoder (see module docstring)."""
    rgba = _matte(_check_rgba(rgba), matting)
    if foreground_ratio and has_foreground_alpha(rgba):
        rgba = recenter(rgba, foreground_ratio)
    rgb = rgba[..., :3] * rgba[..., 3:] + background * (1.0 - rgba[..., 3:])
    H, W = rgb.shape[:2]
    if H != W:  # pad to a square with the background, centered, instead of stretching
        S = max(H, W)
        sq = np.full((S, S, 3), background, dtype=np.float32)
        sq[(S - H) // 2:(S - H) // 2 + H, (S - W) // 2:(S - W) // 2 + W] = rgb
        rgb = sq
    t = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t[0].clamp(0, 1)


def _check_rgba(rgba: np.ndarray) -> np.ndarray:
    if rgba.ndim != 3 or rgba.shape[-1] != 4:
        raise ValueError(f"preprocess expects RGBA [H, W, 4], got {rgba.shape}")
    return rgba


def _to_u8(rgba: np.ndarray) -> np.ndarray:
    """float [0, 1] -> the uint8 values PIL decodes (``load_image`` divided them by 255, so
    rounding gives them back exactly)."""
    return np.round(np.clip(rgba, 0.0, 1.0) * 255.0).astype(np.uint8)


def _matte(rgba: np.ndarray, matting) -> np.ndarray:
    """An opaque image cut out by ``matting`` (``rgb [H, W, 3] -> alpha [H, W]``), when one is given."""
    if matting is not None and not has_foreground_alpha(rgba):
        alpha = np.asarray(matting(rgba[..., :3]), dtype=np.float32)
        if alpha.shape != rgba.shape[:2]:
            raise ValueError(f"matting returned alpha of shape {alpha.shape}, expected {rgba.shape[:2]}")
        rgba = np.concatenate([rgba[..., :3], np.clip(alpha, 0, 1)[..., None]], -1)
    return rgba


def preprocess_triposr(rgba: np.ndarray, size: int, background: float = 0.5, foreground_ratio: float = 0.85,
                       matting: Callable[[np.ndarray], np.ndarray] | None = None) -> torch.Tensor:
    """RGBA ``[H, W, 4]`` in [0, 1] -> RGB ``[3, size, size]`` as TripoSR's ``run.py`` (at d26e331)
    prepares a file for ``TSR.forward``. Its steps, each reproduced here in the same arithmetic:

    1. ``tsr.utils.remove_background``: an RGBA file with some alpha < 255 is used as is; any other
       file goes to rembg. Here: an image with such alpha takes steps 2-3; an opaque one is cut out
       by ``matting`` when given (its alpha quantized to uint8, as rembg's PIL output), else it takes
       ``run.py``'s ``--no-remove-bg`` path (``Image.convert("RGB")``, no recentering, no composite).
    2. ``tsr.utils.resize_foreground(image, ratio)`` on the uint8 array: the bounding box of
       alpha > 0 as ``[min, max)`` (its slice drops the last row and column), padded with zeros
       (transparent) to a square, top/left getting the smaller half, then padded on both sides to
       ``int(side / ratio)``, the smaller half first again.
    3. ``run.py``'s composite: ``/ 255`` in float32, ``rgb * a + (1 - a) * 0.5`` (``background``),
       then ``(x * 255).astype(uint8)``: truncated, not rounded.
    4. ``tsr.utils.ImagePreprocessor.convert_and_resize``: ``/ 255`` in float32, then
       ``F.interpolate`` to ``(cond_image_size, cond_image_size)`` (``size``), bilinear,
       ``align_corners=False``, ``antialias=True``: a non-square image is stretched.
    """
    _check_rgba(rgba)
    if not 0 < foreground_ratio <= 1:
        raise ValueError(f"foreground_ratio must be in (0, 1] for TripoSR's preprocessing, got {foreground_ratio}")
    img = _to_u8(_matte(rgba, matting))
    if (img[..., 3] < 255).any():                       # 1. remove_background: alpha present
        ys, xs = np.nonzero(img[..., 3] > 0)            # 2. resize_foreground
        if ys.size == 0:
            raise ValueError("the image's alpha channel is empty: no foreground object to reconstruct")
        fg = img[ys.min():ys.max(), xs.min():xs.max()]
        if fg.size == 0:
            raise ValueError("the image's foreground is a single row or column of pixels: nothing to reconstruct")
        side = max(fg.shape[0], fg.shape[1])
        h0, w0 = (side - fg.shape[0]) // 2, (side - fg.shape[1]) // 2
        sq = np.zeros((side, side, 4), np.uint8)
        sq[h0:h0 + fg.shape[0], w0:w0 + fg.shape[1]] = fg
        new = int(sq.shape[0] / foreground_ratio)
        p0 = (new - side) // 2
        img = np.zeros((new, new, 4), np.uint8)
        img[p0:p0 + side, p0:p0 + side] = sq
        f = img.astype(np.float32) / 255.0              # 3. run.py's composite, uint8 again
        f = f[:, :, :3] * f[:, :, 3:4] + (1 - f[:, :, 3:4]) * background
        img = (f * 255.0).astype(np.uint8)
    else:                                               # --no-remove-bg: convert("RGB")
        img = img[..., :3]
    t = torch.from_numpy(img.astype(np.float32) / 255.0)  # 4. ImagePreprocessor
    t = F.interpolate(t[None].permute(0, 3, 1, 2), (size, size), mode="bilinear", align_corners=False,
                      antialias=True)
    return t[0].contiguous()


def preprocess_openlrm(rgba: np.ndarray, size: int, background: float = 1.0,
                       matting: Callable[[np.ndarray], np.ndarray] | None = None) -> torch.Tensor:
    """RGBA ``[H, W, 4]`` in [0, 1] -> RGB ``[3, size, size]`` as OpenLRM's inferrer prepares a
    file (v1.1 ``openlrm/runners/infer/lrm.py`` ``LRMInferrer.infer_single``; v1.0
    ``lrm/inferrer.py`` ``LRMInferrer.infer`` does the same). Its steps, reproduced here:

    1. ``np.array(Image.open(path))`` -> uint8 tensor, ``/ 255.0`` (float32);
    2. an RGBA file: ``rgb * a + (1 - a)``, i.e. composited on white (``background``, 1.0 for its
       models); an RGB file has no alpha (here alpha 1: the same numbers);
    3. ``F.interpolate`` to ``(source_size, source_size)`` (``size``), bicubic,
       ``align_corners=True``, no antialias: a non-square image is stretched;
    4. ``clamp(0, 1)``.

    No recentering and no background removal (its inferrer has neither; ``matting``, when given,
    cuts an opaque image out first).
    """
    t = torch.from_numpy(_to_u8(_matte(_check_rgba(rgba), matting))).permute(2, 0, 1)[None] / 255.0
    t = t[:, :3] * t[:, 3:] + background * (1 - t[:, 3:])
    t = F.interpolate(t, size=(size, size), mode="bicubic", align_corners=True)
    return torch.clamp(t, 0, 1)[0].contiguous()


def prepare(rgba: np.ndarray, size: int, mode: str = "default", background: float = 1.0,
            foreground_ratio: float = 0.0, matting: Callable[[np.ndarray], np.ndarray] | None = None) -> torch.Tensor:
    """RGBA -> encoder input ``[3, size, size]`` by the preprocessing named ``mode`` (``PREPROCESS``):
    ``"default"`` is ``preprocess`` (``foreground_ratio`` 0 skips recentering), ``"triposr"`` is
    ``preprocess_triposr`` (with ``foreground_ratio``), ``"openlrm"`` is ``preprocess_openlrm``
    (which never recenters)."""
    if mode == "default":
        return preprocess(rgba, size, background, foreground_ratio, matting)
    if mode == "triposr":
        return preprocess_triposr(rgba, size, background, foreground_ratio or 0.85, matting)
    if mode == "openlrm":
        return preprocess_openlrm(rgba, size, background, matting)
    raise ValueError(f"unknown preprocess {mode!r}; choose one of {', '.join(PREPROCESS)}")
