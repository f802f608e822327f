"""Writing outputs atomically (write to a temp file in the same folder, then rename)."""
from __future__ import annotations

import os
import tempfile

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
            print(f"lrm_fast: mp4 writing failed ({e}); writing a gif instead")
            path = path[:-4] + ".gif"
    tmp = atomic_path(path)
    imageio.mimsave(tmp, list(arr), format="GIF", duration=1.0 / fps, loop=0)
    os.replace(tmp, path)
    return path
