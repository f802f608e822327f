"""The LRM: image + source camera -> triplane; triplane + cameras -> images.

``LRM(cfg)`` holds (names match OpenLRM's ``ModelLRM`` where it helps conversion):
``encoder`` (timm ViT), ``camera_embedder`` (MLP; None for a decoder block without a camera input),
``pos_embed`` ``[1, 3*h*w, D]`` (initialized ``N(0, 1) / sqrt(D)`` as OpenLRM), ``transformer`` (the
decoder of ``cfg.decoder.block``, ``model/decoder.py``), ``upsampler``, ``field``, ``renderer`` (its
sampler from ``cfg.render.sampler``). The variants are chosen here once, at construction. The model
owns the field once (``field.*`` in the state dict); the renderer renders with it but does not hold
it as a submodule (``render/renderer.py``), so there are no tied ``renderer.field.*`` keys. Files
written before carry those copies: ``drop_tied_field_copies`` drops them, on ``load_state_dict`` (a
pre-hook) and in ``io.checkpoint.upgrade_state_dict``.

``backend`` (``"reference" | "fast" | "auto"``) is passed down to every op (the renderer is
the one module that reads it: it picks its fast or reference path, see ``render/renderer.py``).
``set_backend`` changes it everywhere.

``model.reconstruct(images)`` (image files / arrays -> ``lrm_fast.Reconstruction``) is
``lrm_fast.api.reconstruct``, attached to this class by ``lrm_fast/api.py``: it loads images
(the io layer), which sits above the model, so the model does not import it.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import LRMConfig
from ..field.triplane import TriplaneField
from ..render.renderer import Renderer
from ..cameras import FEATURE_DIMS, camera_features, canonical_pose, default_intrinsics
from .camera import CameraEmbedder
from .compiled import CompiledPlanes
from .decoder import build_decoder
from .encoder import ImageEncoder
from .triplane import TriplaneUpsampler


# the state-dict prefix of the field's copies in files written while the renderer held it as a submodule
TIED_FIELD_PREFIX = "renderer.field."


def drop_tied_field_copies(sd: dict, prefix: str = "") -> list[str]:
    """Remove, in place, the ``renderer.field.*`` copies of an old state dict (keys under ``prefix``)
    where every one equals its ``field.*`` twin; a copy that differs stays, to be reported as an
    unexpected key. Returns the removed keys."""
    old = prefix + TIED_FIELD_PREFIX
    dup = [k for k in sd if k.startswith(old) and prefix + k[len(prefix + "renderer."):] in sd]
    if not dup or not all(torch.equal(sd[k], sd[prefix + k[len(prefix + "renderer."):]]) for k in dup):
        return []
    for k in dup:
        del sd[k]
    return dup


def _drop_tied_field_copies_hook(module, state_dict, prefix, *args):
    drop_tied_field_copies(state_dict, prefix)


class LRM(nn.Module):
    # forward_planes reads the source camera's values on the host (a host sync on a GPU); the trainer
    # turns it off: its dataset checked the pose files the cameras come from
    check_cameras = True

    def __init__(self, cfg: LRMConfig, backend: str = "auto"):
        super().__init__()
        self.cfg = cfg
        D = cfg.decoder.dim
        self.encoder = ImageEncoder(cfg.encoder)
        self.camera_embedder = (CameraEmbedder(FEATURE_DIMS[cfg.camera.feature], cfg.camera.embed_dim)
                                if cfg.uses_camera else None)
        n_tokens = 3 * cfg.triplane.low_res ** 2
        self.pos_embed = nn.Parameter(torch.randn(1, n_tokens, D) * D ** -0.5)
        self.transformer = build_decoder(cfg.decoder, cfg.encoder.feat_dim, cfg.camera.embed_dim)
        self.upsampler = TriplaneUpsampler(D, cfg.triplane)
        self.field = TriplaneField(cfg.triplane.channels, cfg.field)
        self.renderer = Renderer(cfg.render, self.field)   # renders with the field, does not own it
        self.register_load_state_dict_pre_hook(_drop_tied_field_copies_hook)
        self.set_backend(backend)

    def set_backend(self, backend: str) -> "LRM":
        """Route every op of this model through ``backend`` ("reference", "fast", "auto")."""
        self.backend = backend
        for m in self.modules():
            if m is not self and hasattr(type(m), "backend"):
                m.backend = backend
        return self

    # -- cameras ----------------------------------------------------------------------------------
    def default_source_camera(self, batch: int = 1, device=None, dtype=torch.float32) -> torch.Tensor:
        """OpenLRM's default source camera feature ``[B, 16]`` (canonical pose, f=0.75, c=0.5)."""
        c = self.cfg.camera
        feat = camera_features(canonical_pose(c.source_distance, dtype, device),
                               default_intrinsics(c.source_focal, 0.5, dtype, device), c.feature)
        return feat.expand(batch, -1)

    # -- image -> triplane ------------------------------------------------------------------------
    def forward_planes(self, image: torch.Tensor, camera: torch.Tensor | None = None) -> torch.Tensor:
        """image ``[B, 3, S, S]`` in [0, 1] (preprocessed), camera feature ``[B, 16|20]`` or None
        (the canonical source camera) -> triplane ``[B, 3, C, H, W]``. NaN/inf cameras are refused
        unless ``check_cameras`` is off."""
        B = image.shape[0]
        tokens = self.encoder(image)
        mod = None
        if self.camera_embedder is not None:
            if camera is None:
                camera = self.default_source_camera(B, image.device, image.dtype)
            want = FEATURE_DIMS[self.cfg.camera.feature]
            if camera.shape != (B, want):
                raise ValueError(f"source camera feature must be [B, {want}] = [{B}, {want}], "
                                 f"got {tuple(camera.shape)}")
            if self.check_cameras and not torch.isfinite(camera).all():
                raise ValueError("source camera feature contains NaN/inf")
            mod = self.camera_embedder(camera.to(tokens.dtype))
        x = self.pos_embed.expand(B, -1, -1).to(tokens.dtype)
        return self.upsampler(self.transformer(x, tokens, mod))

    def compile_planes(self, batch: int = 1, dtype: torch.dtype = torch.float32, mode: str | None = None,
                       **kwargs):
        """A fixed-shape inference runner ``f(image [batch, 3, S, S], camera=None) -> triplane``:
        CUDA graph / torch.compile / eager, see ``model/compiled.py``; ``f.warmup_s`` is its set-up time."""
        return CompiledPlanes(self, batch, dtype, mode, **kwargs)

    # -- triplane -> images ----------------------------------------------------------------------
    def render(self, planes: torch.Tensor, c2w: torch.Tensor, intrinsics: torch.Tensor, height: int,
               width: int | None = None, **kwargs) -> dict[str, torch.Tensor]:
        """See ``Renderer.forward``: ``rgb [B, V, H, W, 3]``, ``depth``, ``opacity``."""
        return self.renderer(planes, c2w, intrinsics, height, width, **kwargs)

    def forward(self, image, camera, render_c2w, render_intrinsics, height, width=None, **kwargs):
        planes = self.forward_planes(image, camera)
        out = self.render(planes, render_c2w, render_intrinsics, height, width, **kwargs)
        out["planes"] = planes
        return out

    # -- bookkeeping ------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        parts = {"encoder": self.encoder, "camera_embedder": self.camera_embedder,
                 "transformer": self.transformer, "upsampler": self.upsampler, "field": self.field}
        counts = {k: sum(p.numel() for p in m.parameters()) if m is not None else 0 for k, m in parts.items()}
        counts["pos_embed"] = self.pos_embed.numel()
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts


def count_parameters(cfg: LRMConfig) -> dict[str, int]:
    """Per-component parameter counts of a config, built on the meta device (no memory)."""
    with torch.device("meta"):
        return LRM(cfg).parameter_counts()
