"""Textured meshes: optional decimation, a UV atlas (xatlas), and a colour texture baked from the field.

Steps (``texture_mesh``):

1. **Decimate** to a face budget when asked (``faces=N``; fast-simplification's quadric collapse).
2. **Unwrap** with xatlas: charts packed into one square atlas of about ``texture_size`` texels,
   ``PADDING`` texels apart, with room for bilinear filtering. Vertices on chart seams are split
   (``vmapping`` says which original vertex each new one copies).
3. **Rasterize** every UV triangle into the ``texture_size``^2 grid: a texel belongs to a triangle
   when its centre ``((i + 0.5) / S, (j + 0.5) / S)`` lies inside it (barycentric test, float64),
   which gives the texel's barycentric weights and so its 3D surface point.
4. **Bake**: the colour of every covered texel is queried at its surface point through the same
   field path as the vertex colours (``model.field`` = the fused triplane-MLP op, in chunks), then
   **dilated** ``DILATE`` texels past the chart borders (each empty texel takes the mean of its
   filled 3x3 neighbours, repeatedly), so that bilinear sampling at a chart's edge never mixes in
   background; the remaining empty texels take the mean colour (what mip-maps then blend with).

UV convention: trimesh's / OBJ's (origin bottom-left, v up); image row 0 is the top (v = 1), so the
texel of ``(u, v)`` is ``image[S - 1 - floor(v * S), floor(u * S)]``. GLB export flips v for glTF.

xatlas and fast-simplification are imported when first used; a missing one is a one-line error
naming the package to install.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_TEXTURE_SIZE = 1024
PADDING = 2          # xatlas texels between charts (in the atlas's own grid, about texture_size)
DILATE = 4           # texels of colour grown past each chart's border
MAX_TEXTURE_SIZE = 8192
SLOW_UNWRAP_FACES = 40_000  # above this xatlas takes a minute or more on a CPU: warn, suggest a face budget


def _require(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeError(f"textured mesh export needs the '{package}' package (pip install {package})") from None


def check_texture_args(texture_size=DEFAULT_TEXTURE_SIZE, faces=None) -> tuple[int, int | None]:
    """Validated ``(texture_size, faces)``; a ``ValueError`` of one line for a bad value."""
    if (isinstance(texture_size, bool) or not isinstance(texture_size, (int, np.integer)) or texture_size < 16
            or texture_size > MAX_TEXTURE_SIZE or texture_size & (texture_size - 1)):
        raise ValueError(f"texture size must be a power of two from 16 to {MAX_TEXTURE_SIZE}, got {texture_size!r}")
    if faces is not None and (isinstance(faces, bool) or not isinstance(faces, (int, np.integer)) or faces < 4):
        raise ValueError(f"face budget must be an integer >= 4 (or None: no decimation), got {faces!r}")
    return int(texture_size), None if faces is None else int(faces)


def decimate(vertices: np.ndarray, faces: np.ndarray, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, faces) with at most ``max_faces`` faces (quadric edge collapse); unchanged when
    already within the budget. Unreferenced vertices are dropped."""
    faces = np.asarray(faces)
    if len(faces) <= max_faces:
        return np.asarray(vertices), faces
    fs = _require("fast_simplification", "fast-simplification")
    v64 = np.ascontiguousarray(vertices, dtype=np.float64)
    f32 = np.ascontiguousarray(faces, dtype=np.int32)
    best, target = None, max_faces
    for attempt in range(4):  # the collapse can stop above its target: retry harder, then asking for fewer
        v, f = fs.simplify(v64, f32, target_count=target, agg=7.0 if attempt % 2 == 0 else 10.0)
        if best is None or len(f) < len(best[1]):
            best = v, f
        if len(f) <= max_faces:
            break
        if attempt % 2:
            target = max(1, int(target * max_faces / len(f)) - 1)
    v, f = best
    if len(f) > max_faces:
        raise RuntimeError(f"decimation stopped at {len(f)} faces (from {len(faces)}), above the budget of "
                           f"{max_faces}; a mesh of many separate pieces cannot shrink further: allow more faces")
    f = np.asarray(f, dtype=np.int64)
    used = np.unique(f)
    remap = np.full(len(v), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return np.asarray(v, dtype=np.float32)[used], remap[f]


def unwrap(vertices: np.ndarray, faces: np.ndarray, texture_size: int = DEFAULT_TEXTURE_SIZE,
           padding: int = PADDING) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas UV atlas: ``(vmapping [V'], faces [F, 3], uv [V', 2] in [0, 1])``; new vertex ``k`` copies
    vertex ``vmapping[k]``; ``faces`` index the new vertices in the input's face order."""
    xatlas = _require("xatlas", "xatlas")
    if len(faces) == 0:
        raise ValueError("cannot unwrap an empty mesh (0 faces)")
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    if atlas.atlas_count != 1:  # resolution with texels_per_unit 0 scales the charts into one atlas
        raise RuntimeError(f"xatlas packed the charts into {atlas.atlas_count} atlases, expected 1")
    vmapping, indices, uv = atlas[0]
    return np.asarray(vmapping, np.int64), np.asarray(indices, np.int64), np.clip(np.asarray(uv, np.float32), 0.0, 1.0)


def _cross2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


# bytes per candidate texel of one ``rasterize_uv`` group (int64 ids and texel indices, float64 corners,
# centre and barycentrics, masks), counted generously
TEXEL_BYTES = 320


def color_chunk(color_fn, max_memory=None) -> int:
    """Points per ``color_fn`` call: as many as the budget ``max_memory`` (``lrm_fast.memory``) holds at
    ``color_fn.query_bytes`` a point (``field_color_fn`` sets it from the field; else 2 KB)."""
    from .memory import MemoryBudget

    return MemoryBudget.resolve(max_memory).count(getattr(color_fn, "query_bytes", 2048), minimum=256)


def rasterize_uv(uv: np.ndarray, faces: np.ndarray, size: int,
                 chunk: int | None = None, max_memory=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Which triangle covers each texel centre: ``(face_id [S, S] int64, -1 = none; bary [S, S, 3] float64)``.

    Indexed ``[j, i]`` with ``j`` along v upward (texel centre ``((i + 0.5) / S, (j + 0.5) / S)``;
    flip rows for an image). A centre on an edge shared by two triangles goes to either (both give
    the same surface point); zero-area UV triangles cover nothing. ``chunk``: candidate texels a group
    (default: as many as the budget ``max_memory`` holds at ``TEXEL_BYTES`` each)."""
    from .memory import MemoryBudget

    S = int(size)
    if chunk is None:
        chunk = MemoryBudget.resolve(max_memory).count(TEXEL_BYTES, minimum=4096)
    P = torch.as_tensor(np.asarray(uv), dtype=torch.float64)[torch.as_tensor(np.asarray(faces), dtype=torch.long)] * S
    lo = torch.ceil(P.min(1).values - 0.5).clamp(0, S - 1).long()      # [F, 2] first candidate texel
    hi = torch.floor(P.max(1).values - 0.5).clamp(-1, S - 1).long()    # [F, 2] last
    n2 = (hi - lo + 1).clamp_min(0)
    area = _cross2(P[:, 1] - P[:, 0], P[:, 2] - P[:, 0])
    n = torch.where(area.abs() > 1e-12, n2[:, 0] * n2[:, 1], torch.zeros_like(n2[:, 0]))
    face_id = torch.full((S, S), -1, dtype=torch.long)
    bary = torch.zeros(S, S, 3, dtype=torch.float64)
    ends = torch.cumsum(n, 0)
    start = 0
    while start < len(n):  # groups of faces with about ``chunk`` candidate texels in all
        base = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(torch.searchsorted(ends, base + chunk, right=True)))
        fidx = torch.arange(start, stop)
        cnt = n[start:stop]
        fid = torch.repeat_interleave(fidx, cnt)
        if fid.numel():
            k = torch.arange(fid.numel()) - torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
            nx = n2[fid, 0]
            ix = lo[fid, 0] + k % nx
            iy = lo[fid, 1] + torch.div(k, nx, rounding_mode="floor")
            c = torch.stack([ix, iy], -1).to(torch.float64) + 0.5
            a, b, d = P[fid, 0], P[fid, 1], P[fid, 2]
            w0 = _cross2(b - c, d - c) / area[fid]
            w1 = _cross2(d - c, a - c) / area[fid]
            w2 = 1.0 - w0 - w1
            inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
            iy, ix = iy[inside], ix[inside]
            face_id[iy, ix] = fid[inside]
            bary[iy, ix] = torch.stack([w0, w1, w2], -1)[inside]
        start = stop
    return face_id, bary


def dilate(image: torch.Tensor, mask: torch.Tensor, iterations: int = DILATE) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow ``image [S, S, C]`` (valid where ``mask [S, S]``) by ``iterations`` texels: each empty
    texel next to filled ones takes their mean. Returns the new ``(image, mask)``."""
    m = mask[None, None].to(image.dtype)
    x = torch.cat([image.permute(2, 0, 1)[None] * m, m], 1)        # [1, C + 1, S, S]: colour sums, count
    C = image.shape[-1]
    for _ in range(int(iterations)):
        s = F.avg_pool2d(x, 3, 1, 1, divisor_override=1)           # 3x3 sums
        new = (x[:, C:] == 0) & (s[:, C:] > 0)
        if not new.any():
            break
        s[:, :C] /= s[:, C:].clamp_min(1)
        s[:, C:] = 1
        x = torch.where(new, s, x)
    return x[0, :C].permute(1, 2, 0).contiguous(), x[0, C] > 0


def surface_points(vertices: np.ndarray, faces: np.ndarray, face_id: torch.Tensor,
                   bary: torch.Tensor) -> torch.Tensor:
    """3D points (float64 ``[N, 3]``) of texels with ``face_id [N]`` and barycentrics ``bary [N, 3]``."""
    V = torch.as_tensor(np.asarray(vertices), dtype=torch.float64)
    Fi = torch.as_tensor(np.asarray(faces), dtype=torch.long)
    return (bary[:, :, None] * V[Fi[face_id]]).sum(1)


def bake_texture(color_fn: Callable[[torch.Tensor], torch.Tensor], vertices: np.ndarray, faces: np.ndarray,
                 uv: np.ndarray, size: int = DEFAULT_TEXTURE_SIZE, dilation: int = DILATE,
                 chunk: int | None = None, background=None, max_memory=None) -> tuple[np.ndarray, np.ndarray]:
    """``(image [S, S, 3] uint8, covered [S, S] bool)``, row 0 = v of 1 (see the module doc).

    ``color_fn(points [N, 3] fp32 CPU) -> rgb [N, 3]`` in [0, 1] (any device; clamped). ``covered``
    marks texels whose centre lies in a UV triangle (their colour is the field's at that point,
    quantized as the vertex colours); dilated and background texels are not covered. Texels neither
    covered nor reached by the dilation get ``background`` (rgb in [0, 1]; None: the mean colour).
    ``chunk``: points per ``color_fn`` call (default ``color_chunk`` of the budget ``max_memory``)."""
    chunk = color_chunk(color_fn, max_memory) if chunk is None else int(chunk)
    face_id, bary = rasterize_uv(uv, faces, size, max_memory=max_memory)
    mask = face_id >= 0
    if not mask.any():
        raise ValueError(f"texture bake: no texel of the {size}x{size} atlas is covered by a triangle")
    pts = surface_points(vertices, faces, face_id[mask], bary[mask]).float()
    rgb = torch.cat([color_fn(pts[s:s + chunk]).float().cpu().reshape(-1, 3) for s in range(0, len(pts), chunk)])
    img = torch.zeros(size, size, 3)
    img[mask] = rgb.clamp(0, 1)
    img, grown = dilate(img, mask, dilation)
    img[~grown] = img[mask].mean(0) if background is None else torch.as_tensor(background, dtype=img.dtype)
    out = (img.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(out[::-1]), mask.numpy()[::-1].copy()


def field_color_fn(model, planes: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``points [N, 3] -> rgb [N, 3]`` (fp32, CPU) of one triplane ``[1, 3, C, H, W]``: the field path
    the mesh's vertex colours take (``model.field``, i.e. the fused triplane-MLP op; points fp32)."""
    field = model.field

    @torch.inference_mode()
    def color(pts: torch.Tensor) -> torch.Tensor:
        raw = field(planes, pts.to(planes.device, torch.float32)[None])
        return field.rgb(raw.float())[0].cpu()

    color.query_bytes = field.query_bytes()
    return color


def vertex_colors(color_fn: Callable[[torch.Tensor], torch.Tensor], vertices: np.ndarray,
                  chunk: int | None = None, max_memory=None) -> np.ndarray:
    """RGBA uint8 ``[V, 4]`` of ``color_fn`` at the vertices (quantized as ``extract_mesh``'s), ``chunk``
    points a call (default ``color_chunk`` of the budget ``max_memory``)."""
    chunk = color_chunk(color_fn, max_memory) if chunk is None else int(chunk)
    v = torch.as_tensor(np.asarray(vertices), dtype=torch.float32)
    rgb = torch.cat([color_fn(v[s:s + chunk]).float().cpu() for s in range(0, len(v), chunk)]) if len(v) else v.new_zeros(0, 3)
    c = (rgb.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return np.concatenate([c, np.full_like(c[:, :1], 255)], 1)


def texture_mesh(mesh, color_fn: Callable[[torch.Tensor], torch.Tensor], texture_size: int = DEFAULT_TEXTURE_SIZE,
                 faces: int | None = None, texture: bool = True, max_memory=None):
    """``mesh`` (a ``trimesh.Trimesh``) decimated to ``faces`` when given, then either UV-unwrapped
    with a baked ``texture_size``^2 colour texture (``texture=True``: ``TextureVisuals`` with a PBR
    material whose ``baseColorTexture`` is the image) or re-coloured per vertex (``texture=False``).
    ``max_memory``: the working memory of the colour queries and the bake (``lrm_fast.memory``)."""
    import trimesh
    from PIL import Image

    texture_size, faces = check_texture_args(texture_size, faces)
    V, Fc = np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.int64)
    if faces is not None and len(Fc) > faces:
        V, Fc = decimate(V, Fc, faces)
        if not texture:
            return trimesh.Trimesh(V, Fc, vertex_colors=vertex_colors(color_fn, V, max_memory=max_memory),
                                   process=False)
    if not texture:
        return mesh
    if len(Fc) > SLOW_UNWRAP_FACES:
        warnings.warn(f"unwrapping {len(Fc)} faces with xatlas can take minutes; a face budget (faces=N, "
                      f"--faces N, e.g. 20000) decimates first", stacklevel=2)
    vmap, Fu, uv = unwrap(V, Fc, texture_size)
    Vu = V[vmap]
    image, _ = bake_texture(color_fn, Vu, Fu, uv, texture_size, max_memory=max_memory)
    material = trimesh.visual.material.PBRMaterial(
        name="lrm_fast", baseColorTexture=Image.fromarray(image), metallicFactor=0.0, roughnessFactor=1.0)
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return trimesh.Trimesh(Vu, Fu, visual=visual, process=False)


__all__ = ["check_texture_args", "decimate", "unwrap", "rasterize_uv", "dilate", "surface_points", "bake_texture",
           "field_color_fn", "vertex_colors", "texture_mesh", "color_chunk", "DEFAULT_TEXTURE_SIZE"]
