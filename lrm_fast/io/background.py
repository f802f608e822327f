"""Background removal for opaque photos: ``remove_background(image, method="auto") -> RGBA``.

The encoder wants the object alone (over the model's background colour, recentered from its alpha).
A phone photo has a background; used as is the model reconstructs a slab. Methods:

* ``"rembg"``: rembg's U^2-Net (``pip install rembg``), only when its model file is already on disk:
  ``$U2NET_HOME/u2net.onnx`` (default ``$XDG_DATA_HOME/.u2net`` or ``~/.u2net``, rembg's own
  convention). Nothing is ever downloaded: the file is opened as rembg's ``u2net_custom`` model.
  Asked for by name and missing: a one-line ``RuntimeError`` saying where to put the file.
* ``"builtin"``: a classical cut-out that needs no model file (numpy + scipy; see ``builtin_alpha``).
  It assumes what a product-style photo has: the object does not cover the image border, and the
  border shows the background. Accuracy on the synthetic photo set of ``bench/suites/bench_background.py``
  (mean IoU 0.95-0.98 per backdrop kind) is in docs/readme/api.md; a cluttered scene is beyond it (use rembg there).
* ``"auto"``: rembg when usable, else the built-in one.
* ``"none"``: the image as is.

With every method an image whose alpha already marks a foreground (some alpha < 1) is returned as
is: an RGBA cut-out is never cut again. An image where no foreground is found is refused with a
one-line ``ValueError`` (not an empty mesh later).
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from .images import has_foreground_alpha, load_image

METHODS = ("auto", "rembg", "builtin", "none")
WORK_SIDE = 256          # the built-in method works on the image downscaled to this longer side
NO_FOREGROUND = "no foreground object found"
TEXTURED = 8.0           # border residual (Lab, 90th percentile) above which the backdrop counts as textured
EDGE = 12.0              # a sharp edge: Lab gradient per working pixel above this
SOFT_FRAC = 0.4          # textured backdrop: drop a part whose contact with the background is > this soft
ROUNDS = 2                # colour classification rounds (step 3 of builtin_alpha)


# ------------------------------------------------------------------------------------------ rembg


def rembg_model_path() -> str:
    """Where rembg keeps ``u2net.onnx`` (its ``U2NET_HOME`` convention)."""
    home = os.getenv("U2NET_HOME", os.path.join(os.getenv("XDG_DATA_HOME", "~"), ".u2net"))
    return os.path.join(os.path.expanduser(home), "u2net.onnx")


def rembg_status() -> str | None:
    """None when rembg can run here without downloading anything, else why not (one line)."""
    import importlib.util

    if importlib.util.find_spec("rembg") is None:
        return "rembg is not installed (pip install rembg)"
    path = rembg_model_path()
    if not os.path.isfile(path):
        return (f"rembg's model file is not on disk: put u2net.onnx at {path} (or set U2NET_HOME to its "
                "folder); nothing is downloaded here")
    return None


_REMBG_SESSION = None


def _rembg_alpha(rgb: np.ndarray) -> np.ndarray:
    global _REMBG_SESSION
    why = rembg_status()
    if why:
        raise RuntimeError(f"--remove-bg rembg: {why}")
    from PIL import Image
    from rembg import new_session

    if _REMBG_SESSION is None:  # u2net_custom opens the given file and never downloads
        _REMBG_SESSION = new_session("u2net_custom", model_path=rembg_model_path())
    pil = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))
    mask = _REMBG_SESSION.predict(pil)[0]
    return np.asarray(mask, dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------- builtin


def _rgb2lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB [..., 3] in [0, 1] -> CIE Lab (D65), float32."""
    c = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = c @ np.array([[0.412453, 0.212671, 0.019334], [0.357580, 0.715160, 0.119193],
                        [0.180423, 0.072169, 0.950227]], np.float32)
    xyz = xyz / np.array([0.950456, 1.0, 1.088754], np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    L = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], -1).astype(np.float32)


def _sqdist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared distances ``[N, k]`` of ``x [N, 3]`` to centres ``c [k, 3]`` (one matrix product)."""
    d = (x[:, 0:1] - c[None, :, 0]) ** 2   # elementwise, not x @ c.T: a BLAS call with 3-wide rows
    d += (x[:, 1:2] - c[None, :, 1]) ** 2  # only spins up threads (slower on a busy 2-core machine)
    d += (x[:, 2:3] - c[None, :, 2]) ** 2
    return d


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 6) -> np.ndarray:
    """Centres ``[k', 3]`` of ``x [N, 3]`` (k-means++ seeding, a few Lloyd steps; empty clusters dropped)."""
    k = min(k, len(x))
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(-1)
    for _ in range(1, k):
        if d2.sum() <= 0:
            break
        centres.append(x[rng.choice(len(x), p=d2 / d2.sum())])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(-1))
    c = np.stack(centres)
    for _ in range(iters):
        lab = _sqdist(x, c).argmin(1)
        n = np.bincount(lab, minlength=len(c))
        sums = np.stack([np.bincount(lab, weights=x[:, i], minlength=len(c)) for i in range(3)], -1)
        c = (sums[n > 0] / n[n > 0, None]).astype(np.float32)
    return c


def _min_dist(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Distance of every ``x [..., 3]`` to its nearest centre."""
    flat = x.reshape(-1, 3)
    return np.sqrt(_sqdist(flat, centres.astype(np.float32)).min(1)).reshape(x.shape[:-1])


def _poly_terms(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], -1)


def _border(h: int, w: int, width: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[:width], m[-width:], m[:, :width], m[:, -width:] = True, True, True, True
    return m


def _clean(fg: np.ndarray, min_frac: float = 0.1, hole_frac: float = 0.02) -> np.ndarray:
    """The largest components (those >= ``min_frac`` of the largest), small holes filled."""
    from scipy import ndimage

    st = np.ones((3, 3), bool)
    lab, n = ndimage.label(fg, st)
    if n == 0:
        return fg
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= max(min_frac * sizes.max(), 1)) + 1
    fg = np.isin(lab, keep)
    holes = ndimage.binary_fill_holes(fg) & ~fg
    hl, hn = ndimage.label(holes)
    if hn:
        hs = np.bincount(hl.ravel())[1:]
        small = np.flatnonzero(hs <= hole_frac * fg.sum()) + 1
        fg |= np.isin(hl, small)
    return fg


def builtin_alpha(rgb: np.ndarray, work_side: int = WORK_SIDE, seed: int = 0) -> np.ndarray:
    """Foreground alpha ``[H, W]`` in [0, 1] of an opaque photo ``rgb [H, W, 3]`` in [0, 1].

    On the image downscaled to ``work_side`` (area average), in Lab, lightly blurred:

    1. background model from the image border (a strip 3% of the side wide): a quadratic surface per
       channel fitted to the border (robust: refitted without its worst 20%), for plain and
       gradient/vignetted backgrounds, and a k-means colour mixture of the border, for textured ones;
       a pixel's background distance is the smaller of the two residuals;
    2. foreground = distance above a threshold set from the border's own residuals (its noise level);
       on a textured backdrop (the border's residual from the smooth surface is large) the parts of
       the foreground between sharp edges that meet the background mostly without one are dropped:
       blurred patches of the backdrop whose colours never reach the border (the object's own
       outline is a sharp edge);
    3. two rounds of colour classification (GrabCut without the graph cut): nearest k-means centre of
       the current foreground vs of the background (border mixture + sure background), the score
       blurred (a cheap smoothness prior) and thresholded (step 2's soft parts dropped again);
    4. cleanup (after each step): the largest components, small holes filled; the mask, lightly
       blurred, is upsampled bilinearly to the full size (edges antialiased). Deterministic
       (``seed`` drives the k-means).
    """
    from scipy import ndimage

    H, W = rgb.shape[:2]
    s = min(1.0, work_side / max(H, W))
    h, w = max(8, round(H * s)), max(8, round(W * s))
    t = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    small = F.interpolate(t, size=(h, w), mode="area")[0].permute(1, 2, 0).numpy() if s < 1 else rgb.astype(np.float32)
    lab = _rgb2lab(np.clip(small, 0, 1))
    lab = ndimage.gaussian_filter(lab, sigma=(0.6, 0.6, 0))
    rng = np.random.default_rng(seed)
    bw = max(2, round(0.03 * max(h, w)))
    border = _border(h, w, bw)

    # 1. background models
    yy, xx = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-1, 1, w, dtype=np.float32),
                         indexing="ij")
    P = _poly_terms(yy, xx)
    Pb, Lb = P[border], lab[border]
    use = np.ones(len(Pb), bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(Pb[use], Lb[use], rcond=None)
        r = np.linalg.norm(Lb - Pb @ coef, axis=-1)
        use = r <= np.quantile(r, 0.8)
    d_surf = np.linalg.norm(lab - P @ coef, axis=-1)
    # a border that a smooth surface does not explain (a textured backdrop) may hide backdrop colours
    # that never reach the border: then soft-edged regions are dropped (step 2)
    textured = float(np.quantile(d_surf[border], 0.9)) > TEXTURED
    sample = Lb[rng.choice(len(Lb), min(len(Lb), 2000), replace=False)]
    bg_c = _kmeans(sample, 8, rng)
    d_mix = _min_dist(lab, bg_c)
    d = np.minimum(d_surf, d_mix)

    # 2. threshold from the border's noise
    noise = float(np.quantile(d[border], 0.95))
    thr = max(8.0, 2.0 * noise)
    gy, gx = ndimage.sobel(lab, 0) / 8, ndimage.sobel(lab, 1) / 8
    sharp = ndimage.binary_dilation(np.sqrt((gx * gx + gy * gy).sum(-1)) > EDGE, iterations=1)

    def drop_soft(m):
        """Drop the parts of ``m`` (between sharp edges) that meet the background mostly without one."""
        if EDGE <= 0 or not textured:
            return m
        parts, n = ndimage.label(m & ~sharp)
        if n == 0:
            return m
        near_bg = ndimage.binary_dilation(~m) & m & ~sharp
        near_edge = ndimage.binary_dilation(sharp & m) & m & ~sharp
        a = np.bincount(parts[near_bg], minlength=n + 1)
        b = np.bincount(parts[near_edge | near_bg], minlength=n + 1)
        soft = np.flatnonzero((a > SOFT_FRAC * np.maximum(b, 1)) & (a > 0))
        soft = soft[soft > 0]
        return m & ~np.isin(parts, soft) if len(soft) else m

    fg = _clean(drop_soft(d > thr))
    if fg.sum() < 4:
        raise ValueError(f"{NO_FOREGROUND}: the image looks like background everywhere (the built-in "
                         "method compares it with the colours along the border)")

    # 3. colour classification rounds
    for _ in range(ROUNDS):
        inner = ndimage.binary_erosion(fg, iterations=2)
        if inner.sum() < 16:
            inner = fg
        sure_bg = ~ndimage.binary_dilation(fg, iterations=3) & (d < thr)
        fpix = lab[inner]
        fg_c = _kmeans(fpix[rng.choice(len(fpix), min(len(fpix), 2000), replace=False)], 8, rng)
        bpix = lab[sure_bg]
        if len(bpix) >= 16:
            more = _kmeans(bpix[rng.choice(len(bpix), min(len(bpix), 2000), replace=False)], 8, rng)
            bgc = np.concatenate([bg_c, more])
        else:
            bgc = bg_c
        db = np.minimum(_min_dist(lab, bgc), d_surf)
        df = _min_dist(lab, fg_c)
        score = ndimage.gaussian_filter(db - df, sigma=0.6)
        fg = _clean(drop_soft(score > 0))
        if fg.sum() < 4:
            break
    if fg.sum() < 4:
        raise ValueError(f"{NO_FOREGROUND}: the image looks like background everywhere")

    # 4. soft mask at full size
    m = ndimage.gaussian_filter(fg.astype(np.float32), sigma=0.7)
    if s < 1:
        m = F.interpolate(torch.from_numpy(m)[None, None], size=(H, W), mode="bilinear",
                          align_corners=False)[0, 0].numpy()
    return np.clip(m, 0, 1)


# ------------------------------------------------------------------------------------------ entry


def resolve_method(method: str) -> str:
    """``auto`` -> ``rembg`` when usable, else ``builtin``; other names are checked and returned."""
    if method not in METHODS:
        raise ValueError(f"unknown background removal method {method!r}; choose from {', '.join(METHODS)}")
    if method == "auto":
        return "rembg" if rembg_status() is None else "builtin"
    return method


def remove_background(image, method: str = "auto") -> np.ndarray:
    """Cut the object out of an opaque photo: RGBA float32 ``[H, W, 4]`` in [0, 1].

    ``image``: anything ``load_image`` accepts (path, PIL, array, tensor). ``method``: ``auto`` |
    ``rembg`` | ``builtin`` | ``none`` (module docstring). An image whose alpha already marks a
    foreground is returned as is. No foreground found -> ``ValueError``; ``rembg`` asked for but not
    usable here -> ``RuntimeError`` saying why."""
    rgba = load_image(image)   # (a no-op on what load_image returned before)
    how = resolve_method(method)
    if how == "none" or has_foreground_alpha(rgba):
        return rgba
    rgb = rgba[..., :3]
    alpha = _rembg_alpha(rgb) if how == "rembg" else builtin_alpha(rgb)
    if not (alpha > 0.5).any():
        raise ValueError(f"{NO_FOREGROUND} ({how} background removal)")
    return np.concatenate([rgb, alpha[..., None].astype(np.float32)], -1)
