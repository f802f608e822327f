"""Fixed-shape image -> triplane for inference: one captured graph per (batch, dtype, device).

``CompiledPlanes(model, batch, dtype, mode)`` (or ``model.compile_planes(...)``) runs the same math
as ``LRM.forward_planes`` (encoder -> camera embedding -> decoder -> upsampler) for images
``[batch, 3, S, S]`` and returns triplanes ``[batch, 3, C, 2h, 2w]`` (fp32 unless ``out_dtype``).

Modes:

* ``"eager"``: ``torch.no_grad`` + autocast to ``dtype``; no capture. The CPU default (on CPU the
  fast path is fp32 SDPA: CPU bf16 matmuls are slower than fp32 on the machines we measured).
* ``"graph"`` (CUDA): the eager forward captured once as a CUDA graph on static input/output
  buffers; a call copies the inputs in, replays, and returns the output (cloned unless
  ``clone=False``). Removes the per-kernel launch overhead that dominates a ~4 ms forward.
* ``"compile"``: ``torch.compile`` of the forward (inductor's default mode; pass
  ``compile_kwargs={"mode": "max-autotune-no-cudagraphs"}`` to autotune matmuls, minutes of
  warm-up), then on CUDA captured as a CUDA graph like ``"graph"``. Inductor fuses the modulation, GELU and residual adds into the matmul epilogues.

Precision: for ``dtype`` bf16/fp16 the runner keeps its own copy of the model's weights in
``dtype`` (so the graph does not re-cast ~260M fp32 weights every call, which autocast would do)
and still runs under autocast, so LayerNorm statistics and softmax stay fp32 (autocast's fp32 list;
SDPA / xformers accumulate in fp32). The copy is taken at construction: rebuild the runner after
changing the model's weights. ``dtype=float32`` uses the model itself.

Warm-up (first calls that pick kernels, the probe of ``ops.attention``, compilation and capture)
is timed separately as ``warmup_s``. Validation (shape, dtype, finite camera) happens on the
inputs before they enter the graph, because a CUDA graph cannot contain host syncs.
"""
from __future__ import annotations

import copy
import time

import torch
from torch import nn

from ..cameras import FEATURE_DIMS

MODES = ("eager", "graph", "compile")


class CompiledPlanes:
    def __init__(self, model: nn.Module, batch: int = 1, dtype: torch.dtype = torch.float32,
                 mode: str | None = None, device: torch.device | str | None = None, clone: bool = True,
                 out_dtype: torch.dtype = torch.float32, compile_kwargs: dict | None = None,
                 warmup_iters: int = 2):
        if mode is None:
            mode = "graph" if torch.device(device or _model_device(model)).type == "cuda" else "eager"
        if mode not in MODES:
            raise ValueError(f"CompiledPlanes mode must be one of {MODES}, got {mode!r}")
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"CompiledPlanes dtype must be float32, bfloat16 or float16, got {dtype}")
        if batch < 1:
            raise ValueError(f"CompiledPlanes batch must be >= 1, got {batch}")
        self.device = torch.device(device or _model_device(model))
        if mode == "graph" and self.device.type != "cuda":
            raise ValueError(f"mode 'graph' captures a CUDA graph and needs a CUDA model, got {self.device}")
        self.batch, self.dtype, self.mode, self.clone, self.out_dtype = batch, dtype, mode, clone, out_dtype
        cfg = model.cfg
        self.image_size = cfg.encoder.image_size
        self.camera_dim = FEATURE_DIMS[cfg.camera.feature] if model.camera_embedder is not None else None

        if dtype != torch.float32:  # own low-precision copy of the weights (see module docstring)
            model = copy.deepcopy(model).to(self.device, dtype)
        self.model = model.eval().requires_grad_(False) if dtype != torch.float32 else model
        self._fn = self._forward
        if mode == "compile":
            kw = dict(compile_kwargs or {})
            self._fn = torch.compile(self._forward, **kw)

        self._image = torch.rand(batch, 3, self.image_size, self.image_size, device=self.device)
        self._camera = (model.default_source_camera(batch, self.device).clone().contiguous()
                        if self.camera_dim else None)
        self._default_camera = self._camera.clone() if self.camera_dim else None
        self._camera_is_default = True
        self._graph = None
        self._out = None
        t0 = time.perf_counter()
        self._warmup(warmup_iters)
        self.warmup_s = time.perf_counter() - t0

    # -- the math (mirrors LRM.forward_planes without host syncs; tests pin them equal) -------
    def _forward(self, image: torch.Tensor, camera: torch.Tensor | None) -> torch.Tensor:
        m = self.model
        # cache_enabled=False: cached weight casts must not outlive a CUDA graph capture
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32,
                            cache_enabled=False):
            tokens = m.encoder(image.to(_param_dtype(m)))
            mod = m.camera_embedder(camera.to(tokens.dtype)) if self.camera_dim else None
            x = m.pos_embed.expand(image.shape[0], -1, -1).to(tokens.dtype)
            x = m.transformer(x, tokens, mod)
            planes = m.upsampler(x)
        return planes.to(self.out_dtype)

    def _warmup(self, iters: int) -> None:
        with torch.no_grad():
            if self.device.type != "cuda":
                for _ in range(max(iters, 1)):
                    self._fn(self._image, self._camera)
                return
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(max(iters, 1)):
                    self._fn(self._image, self._camera)
            torch.cuda.current_stream(self.device).wait_stream(side)
            if self.mode in ("graph", "compile"):
                self._graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self._graph):
                    self._out = self._fn(self._image, self._camera)
                self._graph.replay()
            torch.cuda.synchronize(self.device)

    # -- calls ----------------------------------------------------------------------------------
    def __call__(self, image: torch.Tensor, camera: torch.Tensor | None = None) -> torch.Tensor:
        """image ``[batch, 3, S, S]`` in [0, 1], camera feature ``[batch, 16|20]`` or None (the
        canonical source camera) -> triplane ``[batch, 3, C, H, W]``."""
        want = (self.batch, 3, self.image_size, self.image_size)
        if tuple(image.shape) != want:
            raise ValueError(f"CompiledPlanes was built for images {list(want)}, got {list(image.shape)}; "
                             f"build another runner for another batch/size")
        if not image.is_floating_point():
            raise ValueError(f"image must be a float tensor in [0, 1], got {image.dtype}")
        if camera is not None:
            if self.camera_dim is None:
                raise ValueError("this model has no camera conditioning; pass camera=None")
            if tuple(camera.shape) != (self.batch, self.camera_dim):
                raise ValueError(f"source camera feature must be [{self.batch}, {self.camera_dim}], "
                                 f"got {list(camera.shape)}")
            if not torch.isfinite(camera).all():
                raise ValueError("source camera feature contains NaN/inf")
        if self._graph is None:
            cam = self._camera if camera is None else camera.to(self.device, self._camera.dtype)
            with torch.no_grad():
                return self._fn(image.to(self.device), cam)
        self._image.copy_(image)
        if self.camera_dim and not (camera is None and self._camera_is_default):
            self._camera.copy_(self._default_camera if camera is None else camera)
            self._camera_is_default = camera is None
        self._graph.replay()
        return self._out.clone() if self.clone else self._out


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _param_dtype(model: nn.Module) -> torch.dtype:
    return model.pos_embed.dtype


def compile_planes(model: nn.Module, batch: int = 1, dtype: torch.dtype = torch.float32,
                   mode: str | None = None, **kwargs) -> CompiledPlanes:
    """``CompiledPlanes(model, batch, dtype, mode, **kwargs)``; see the module docstring."""
    return CompiledPlanes(model, batch, dtype, mode, **kwargs)
