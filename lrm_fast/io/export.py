"""Writing outputs atomically (write to a temp file in the same folder, then rename), and the
registry of output formats (``EXPORTERS``: name -> writer) that the API, the CLI, batches and the
web demo all read."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.detach().float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def atomic_path(path: str):
    """A temp path beside ``path``; ``os.replace`` it onto ``path`` when done."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the user's usual mode
    return tmp


def save_frames(frames: torch.Tensor, stem: str) -> list[str]:
    """frames ``[V, H, W, 3]`` -> ``{stem}_view{k:03d}.png``."""
    from PIL import Image

    out = []
    for k, f in enumerate(_to_uint8(frames)):
        path = f"{stem}_view{k:03d}.png"
        tmp = atomic_path(path)
        Image.fromarray(f).save(tmp, format="PNG")
        os.replace(tmp, path)
        out.append(path)
    return out


def save_video(frames: torch.Tensor, path: str, fps: int = 12) -> str:
    """frames ``[V, H, W, 3]`` -> mp4 (imageio-ffmpeg), or gif when ffmpeg is unavailable."""
    import imageio.v2 as imageio

    arr = _to_uint8(frames)
    if path.endswith(".mp4"):
        try:
            tmp = atomic_path(path)
            with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                                    macro_block_size=1) as w:
                for f in arr:
                    w.append_data(f)
            os.replace(tmp, path)
            return path
        except Exception as e:  # no ffmpeg binary: fall back to gif
            if os.path.exists(tmp):
                os.remove(tmp)
            import sys

            print(f"lrm_fast: mp4 writing failed ({e}); writing a gif instead", file=sys.stderr)
            path = path[:-4] + ".gif"
    tmp = atomic_path(path)
    imageio.mimsave(tmp, list(arr), format="GIF", duration=1.0 / fps, loop=0)
    os.replace(tmp, path)
    return path


def save_image(image: torch.Tensor, path: str) -> str:
    """image ``[H, W, 3]`` in [0, 1] -> PNG at ``path`` (atomic)."""
    from PIL import Image

    tmp = atomic_path(path)
    Image.fromarray(_to_uint8(image)).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def save_mesh(mesh, path: str) -> str:
    """A ``trimesh.Trimesh`` -> ``.glb`` / ``.obj`` / ``.ply`` at ``path`` (atomic; format from the suffix).

    Coordinates are the model's world frame (OpenLRM: z up, the input camera on -y), unscaled."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in ("glb", "obj", "ply"):
        raise ValueError(f"{path}: mesh format must be .glb, .obj or .ply")
    tmp = atomic_path(path)
    try:
        # obj: trimesh writes vertex colors as extra 'v x y z r g b' columns (what MeshLab/Blender read)
        data = mesh.export(file_type=ext, **({"include_color": True} if ext == "obj" else {}))
        with open(tmp, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _write_atomic(path: str, data: bytes) -> str:
    tmp = atomic_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_textured_mesh(mesh, path: str) -> list[str]:
    """A UV-textured ``trimesh.Trimesh`` (``lrm_fast.texture.texture_mesh``) -> the written paths.

    ``.glb``: one file, the texture embedded as a PNG ``baseColorTexture`` of a PBR material (glTF's v
    points down; trimesh flips it). ``.obj``: ``<stem>.obj`` + ``<stem>.mtl`` (``map_Kd``, white ``Kd``
    so viewers do not darken the texture) + ``<stem>_texture.png`` beside it; each file atomic, the
    obj written last so it never names a missing file."""
    import io

    from trimesh.exchange.obj import export_obj

    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in ("glb", "obj"):
        raise ValueError(f"{path}: a textured mesh must be .glb or .obj (.ply holds no texture)")
    material = getattr(mesh.visual, "material", None)
    image = getattr(material, "baseColorTexture", None)
    image = getattr(material, "image", None) if image is None else image
    if getattr(mesh.visual, "uv", None) is None or image is None:
        raise ValueError(f"{path}: the mesh has no UV texture to write (make it with texture=True)")
    if ext == "glb":
        return [save_mesh(mesh, path)]
    stem = os.path.splitext(path)[0]
    base = os.path.basename(stem)
    name = getattr(material, "name", None) or "material0"
    png = io.BytesIO()
    image.save(png, format="PNG")
    mtl = (f"# lrm_fast textured mesh\nnewmtl {name}\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\n"
           f"map_Kd {base}_texture.png\n")
    text, _ = export_obj(mesh, include_texture=True, return_texture=True, mtl_name=f"{base}.mtl")
    return [_write_atomic(f"{stem}_texture.png", png.getvalue()), _write_atomic(f"{stem}.mtl", mtl.encode()),
            _write_atomic(path, text.encode())]


def save_triplane(planes: torch.Tensor, path: str, model: str | None = None) -> str:
    """One triplane ``[3, C, H, W]`` -> safetensors at ``path`` (atomic), with the model name it came from."""
    from safetensors.torch import save_file

    tmp = atomic_path(path)
    try:
        save_file({"triplane": planes.detach().float().cpu().contiguous()}, tmp,
                  metadata={"format": "lrm_fast.triplane", **({"model": str(model)} if model else {})})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_triplane(path: str) -> tuple[torch.Tensor, dict]:
    """``(triplane [3, C, H, W], metadata)`` from ``save_triplane``'s file."""
    from safetensors import safe_open

    if not os.path.exists(path):
        raise FileNotFoundError(f"triplane file not found: {path}")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            if "triplane" not in f.keys():
                raise KeyError(f"{path}: no 'triplane' tensor (keys {list(f.keys())[:5]})")
            t = f.get_tensor("triplane")
    except KeyError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt / not safetensors
        raise ValueError(f"{path}: not a readable triplane file ({e})") from None
    if t.dim() != 4 or t.shape[0] != 3:
        raise ValueError(f"{path}: triplane must be [3, C, H, W], got {tuple(t.shape)}")
    return t, meta


# ---------------------------------------------------------------------------------------------
# The output formats: one registry, read by ``Reconstruction.save``, ``reconstruct_many``, the CLI
# (``reconstruct --formats`` / ``render --formats`` and their help) and the web demo.
# ---------------------------------------------------------------------------------------------

# What a format writes, in the order ``write_kind`` callers write them (meshes, frames, videos, the
# triplane). The data each kind's writers take:
#   mesh:     a ``trimesh.Trimesh`` (vertex colours, or a UV texture with ``texture=True``);
#   frames:   rgb ``[V, H, W, 3]`` in [0, 1] (the turntable), plus the encoder input ``[H, W, 3]`` or None;
#   video:    rgb ``[V, H, W, 3]`` in [0, 1];
#   triplane: one triplane ``[3, C, H, W]``.
KINDS = ("mesh", "frames", "video", "triplane")


@dataclass(frozen=True)
class Exporter:
    """One output format. ``write(data, stem, **options) -> written paths``: ``data`` is the kind's
    (see ``KINDS``), ``stem`` the path without a suffix; a writer reads the options it knows
    (``texture``, ``fps``, ``input``, ``model``) and ignores the rest. ``texture``: a mesh format
    that can hold a UV texture."""
    name: str
    kind: str
    write: Callable[..., "list[str]"]
    texture: bool = False


EXPORTERS: dict[str, Exporter] = {}


def register(name: str, kind: str, write: Callable[..., "list[str]"], texture: bool = False) -> Exporter:
    """Add (or replace) output format ``name``; the registry keeps the order of first registration."""
    if kind not in KINDS:
        raise ValueError(f"exporter {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    EXPORTERS[name] = Exporter(name, kind, write, texture)
    return EXPORTERS[name]


def format_names(kinds=KINDS) -> tuple[str, ...]:
    """The registered format names (registry order) of these kinds."""
    return tuple(n for n, e in EXPORTERS.items() if e.kind in kinds)


def formats_help(kinds=KINDS) -> str:
    """``"glb, obj, ply (mesh), mp4, gif (video), ..."``: the formats of these kinds, grouped by kind."""
    groups: dict[str, list[str]] = {}
    for n in format_names(kinds):
        groups.setdefault(EXPORTERS[n].kind, []).append(n)
    return ", ".join(f"{', '.join(ns)} ({k})" for k, ns in groups.items())


def check_formats(formats, kinds=KINDS, texture: bool = False) -> tuple[str, ...]:
    """``formats`` (a name, a comma list, or a sequence of names; case and a leading dot ignored) ->
    the names, each once, in the order given. Raises a one-line ``ValueError`` for a name outside the
    registry (or outside ``kinds``), for none at all, and, with ``texture=True``, for a mesh format
    that holds no texture."""
    if isinstance(formats, str):
        formats = formats.split(",")
    names = tuple(dict.fromkeys(str(f).strip().lower().lstrip(".") for f in formats if str(f).strip()))
    known = format_names(kinds)
    bad = [f for f in names if f not in known]
    if bad or not names:
        raise ValueError(f"unknown output format(s) {bad or list(names)}; choose from {', '.join(known)}")
    flat = untextured(names)
    if texture and flat:
        raise ValueError(f"a textured mesh cannot be written as {', '.join(flat)} (no texture there); "
                         f"use {' or '.join(textured())}")
    return names


def untextured(formats) -> list[str]:
    """The mesh formats among ``formats`` that hold no UV texture (e.g. ply)."""
    return [f for f in formats if f in EXPORTERS and EXPORTERS[f].kind == "mesh" and not EXPORTERS[f].texture]


def textured() -> list[str]:
    """The registered mesh formats that hold a UV texture (glb, obj)."""
    return [n for n, e in EXPORTERS.items() if e.kind == "mesh" and e.texture]


def kinds_of(formats) -> set[str]:
    """The kinds these (checked) format names write."""
    return {EXPORTERS[f].kind for f in formats}


def write_kind(formats, kind: str, data, stem: str, **options) -> list[str]:
    """Write ``data`` (one ``kind``'s) in each of ``formats`` of that kind, in registry order; the paths."""
    written: list[str] = []
    for name, e in EXPORTERS.items():
        if e.kind == kind and name in formats:
            written += e.write(data, stem, **options)
    return written


def _mesh_writer(ext: str):
    def write(mesh, stem: str, texture: bool = False, **_) -> list[str]:
        path = f"{stem}.{ext}"
        return save_textured_mesh(mesh, path) if texture else [save_mesh(mesh, path)]
    return write


def _video_writer(ext: str):
    def write(frames, stem: str, fps: int = 12, **_) -> list[str]:
        return [save_video(frames, f"{stem}.{ext}", fps=fps)]
    return write


def _write_frames(frames, stem: str, input=None, **_) -> list[str]:  # noqa: A002 - the option's name
    """``<stem>_viewNNN.png`` per frame, and ``<stem>_input.png`` when the encoder input is given."""
    return save_frames(frames, stem) + ([] if input is None else [save_image(input, stem + "_input.png")])


def _write_triplane(planes, stem: str, model: str | None = None, **_) -> list[str]:
    return [save_triplane(planes, stem + ".triplane.safetensors", model=model)]


register("glb", "mesh", _mesh_writer("glb"), texture=True)
register("obj", "mesh", _mesh_writer("obj"), texture=True)
register("ply", "mesh", _mesh_writer("ply"))
register("mp4", "video", _video_writer("mp4"))
register("gif", "video", _video_writer("gif"))
register("png", "frames", _write_frames)
register("triplane", "triplane", _write_triplane)
