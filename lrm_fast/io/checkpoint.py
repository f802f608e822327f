"""Checkpoints: our format (safetensors + config.json). Converters for OpenLRM / TripoSR are added
by the API issue."""
from __future__ import annotations

import json
import os

import torch


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a pickle (loaded with ``weights_only=True``)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "weights"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


def save_checkpoint(model, out_dir: str, dtype: torch.dtype | None = None) -> None:
    """Write ``model.safetensors`` + ``config.json`` into ``out_dir`` atomically."""
    from safetensors.torch import save_file

    from .export import atomic_path

    os.makedirs(out_dir, exist_ok=True)
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
          for k, v in model.state_dict().items()}
    tmp = atomic_path(os.path.join(out_dir, "model.safetensors"))
    save_file(sd, tmp)
    os.replace(tmp, os.path.join(out_dir, "model.safetensors"))
    tmp = atomic_path(os.path.join(out_dir, "config.json"))
    with open(tmp, "w") as f:
        f.write(model.cfg.to_json())
    os.replace(tmp, os.path.join(out_dir, "config.json"))


def load_checkpoint(path: str, backend: str = "auto"):
    """Our checkpoint folder (config.json + model.safetensors) -> LRM."""
    from ..config import LRMConfig
    from ..model.lrm import LRM

    cfg_path = os.path.join(path, "config.json")
    if not os.path.isdir(path) or not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{path}: not a checkpoint folder (expected config.json + model.safetensors)")
    with open(cfg_path) as f:
        cfg = LRMConfig.from_dict(json.load(f))
    sd = read_state_dict(os.path.join(path, "model.safetensors"))
    with torch.device("meta"):
        model = LRM(cfg, backend=backend)
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"{path}: state dict does not match the config: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}")
    return _materialize_buffers(model)


def _materialize_buffers(model):
    from ..model.encoder import IMAGENET_MEAN, IMAGENET_STD

    model.encoder.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
    model.encoder.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
    return model.float()
