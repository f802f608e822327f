"""The user-facing API: ``load_model``, ``reconstruct``, ``Reconstruction``.

    import lrm_fast
    model = lrm_fast.load_model("tiny")                  # a preset (random weights) or a checkpoint
    rec = lrm_fast.reconstruct(model, "photo.png")
    views = rec.render(azimuths=[0, 90, 180], elevations=20, resolution=128)   # [B, V, H, W, 3]
    rec.save("out/", formats=("png", "mp4"))
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .config import LRMConfig, PRESETS
from .model.camera import default_intrinsics, orbit_cameras
from .model.lrm import LRM


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(path_or_preset: str = "tiny", device: str = "auto", dtype: str | torch.dtype = "auto",
               backend: str = "auto", seed: int = 0) -> LRM:
    """A preset name (random weights from ``seed``; loudly untrained) or a checkpoint path."""
    dev = _device(device)
    if path_or_preset in PRESETS:
        torch.manual_seed(seed)
        model = LRM(LRMConfig.preset(path_or_preset), backend=backend)
        model.untrained = True
    else:
        from .io.checkpoint import load_checkpoint

        model = load_checkpoint(path_or_preset, backend=backend)
        model.untrained = False
    if dtype == "auto":
        dtype = torch.float32
    return model.to(dev, dtype).eval()


@dataclass
class Reconstruction:
    """Triplanes of a batch of images plus the model that renders them."""

    model: LRM
    triplane: torch.Tensor      # [B, 3, C, H, W]

    @torch.inference_mode()
    def render(self, azimuths=(0.0,), elevations=0.0, distance: float = 2.0, resolution: int = 128,
               focal: float = 0.75) -> dict[str, torch.Tensor]:
        """Views on a sphere around the object: ``rgb [B, V, H, W, 3]``, depth, opacity."""
        B = self.triplane.shape[0]
        c2w = orbit_cameras(azimuths, elevations, distance, device=self.triplane.device)
        V = c2w.shape[0]
        K = default_intrinsics(focal, device=self.triplane.device).expand(B, V, 4)
        return self.model.render(self.triplane, c2w.expand(B, -1, -1, -1), K, resolution)

    def turntable(self, n_views: int = 36, resolution: int = 128, elevation: float = 15.0,
                  distance: float = 2.0) -> torch.Tensor:
        az = np.linspace(0.0, 360.0, n_views, endpoint=False)
        return self.render(az, elevation, distance, resolution)["rgb"]

    def save(self, out_dir: str, formats=("png", "mp4"), n_views: int = 36, resolution: int = 128) -> list[str]:
        from .io.export import save_frames, save_video

        os.makedirs(out_dir, exist_ok=True)
        frames = self.turntable(n_views, resolution)
        written = []
        for b in range(frames.shape[0]):
            stem = os.path.join(out_dir, f"object{b:02d}")
            if "png" in formats:
                written += save_frames(frames[b], stem)
            if "mp4" in formats or "gif" in formats:
                written.append(save_video(frames[b], stem + (".mp4" if "mp4" in formats else ".gif")))
        return written


@torch.inference_mode()
def reconstruct(model: LRM, images, camera: torch.Tensor | None = None) -> Reconstruction:
    """One image (path, PIL, array, tensor) or a list of them -> ``Reconstruction``."""
    from .io.images import load_image, preprocess

    if not isinstance(images, (list, tuple)):
        images = [images]
    p = next(model.parameters())
    size = model.cfg.encoder.image_size
    batch = torch.stack([preprocess(load_image(im), size, model.cfg.render.background) for im in images])
    planes = model.forward_planes(batch.to(p.device, p.dtype), camera)
    return Reconstruction(model, planes)
