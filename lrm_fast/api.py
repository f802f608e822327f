"""The user-facing API: ``load_model``, ``reconstruct``, ``Reconstruction``.

    import lrm_fast
    model = lrm_fast.load_model("tiny")                  # a preset (random weights) or a checkpoint
    rec = model.reconstruct("photo.png")                 # or lrm_fast.reconstruct(model, [a, b, c])
    views = rec.render(azimuths=[0, 90, 180], elevations=20, resolution=128)["rgb"]   # [B, V, H, W, 3]
    mesh = rec.mesh(resolution=256)                      # trimesh.Trimesh with vertex colors
    mesh = rec.mesh(texture=True, texture_size=1024)     # ... or UV-unwrapped with a baked texture
    rec.save("out/", formats=("glb", "mp4"))

Everything runs under ``torch.inference_mode()`` in the model's dtype (``dtype="auto"``: bf16 on
CUDA, fp32 on CPU, or int8 encoder and decoder Linears where ``info.int8_auto`` says they pay;
``dtype="int8"``: ``model/quant.py``). Nothing is ever downloaded.

Every call that renders or meshes takes ``max_memory``: the working memory its chunked stages may
hold (bytes or a size such as ``"4GB"``; None: a share of what the device has free), see
``lrm_fast.memory``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field as _dc_field

import numpy as np
import torch

from .config import LRMConfig, PRESETS
from .io.export import check_formats, format_names, kinds_of, write_kind
from .cameras import FEATURE_DIMS, camera_features, default_intrinsics, orbit_cameras
from .model.lrm import LRM
from .field.occupancy import OccupancyGrid, proven_occupancy
from .memory import MemoryBudget, parse_memory
from .texture import DEFAULT_TEXTURE_SIZE, check_texture_args, field_color_fn, texture_mesh
from .info import int8_auto
from .model.quant import quantize_int8

# The model ``lrm-fast reconstruct`` and ``load_model()`` use when none is named: a preset name or a
# checkpoint path (a path relative to the package folder is resolved there).
DEFAULT_MODEL = "assets/demo"
# a default render builds the occupancy grid only when its dense samples are at least this many times
# the grid's lattice points ((2 G + 1)^3 a triplane): building costs up to that many field queries, and
# skipping then keeps 15-30 % of the samples on the fitted fields (docs/readme/bench.md)
GRID_SAMPLES_RATIO = 0.5

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
FORMATS = format_names()  # the output formats ``save`` writes (the registry ``io.export.EXPORTERS``)


def _device(device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but no CUDA GPU is visible")
    return dev


def _dtype(dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype == "int8":  # fp32 weights, then quantized by load_model
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'int8' or one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _int8(dtype, device: torch.device) -> bool:
    """Whether ``load_model`` quantizes: ``"int8"`` (CPU only), or ``"auto"`` on a CPU where
    ``info.int8_auto`` records that int8 pays."""
    if dtype == "int8":
        if device.type != "cpu":
            raise ValueError(f"dtype 'int8' runs on the CPU only, got device {device}; use bf16 on a GPU")
        return True
    return dtype == "auto" and device.type == "cpu" and int8_auto()[0]


def _resolve_model_path(name: str) -> str:
    if os.path.exists(name):
        return name
    packaged = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    if os.path.exists(packaged):
        return packaged
    raise FileNotFoundError(f"model {name!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor an "
                            "existing checkpoint path (lrm_fast folder, OpenLRM folder/model.pth, TripoSR folder)")


def load_model(path_or_preset: str | None = None, device="auto", dtype="auto", backend: str = "auto",
               seed: int = 0, image_size: int | None = None) -> LRM:
    """A model ready for inference (eval mode, on ``device``, in ``dtype``).

    Args:
        path_or_preset: a preset name (``tiny``, ``small``, ``base``, ``large``, ``paper``, ``triposr``;
            random weights from ``seed``, marked ``model.untrained = True``) or a checkpoint path: our
            folder (config.json + model.safetensors), an OpenLRM v1.1 folder, an OpenLRM v1.0
            ``model.pth`` or a TripoSR folder (config.yaml + model.ckpt), detected by keys.
            Default: ``DEFAULT_MODEL``.
        device: ``"auto"`` (CUDA if visible), ``"cpu"``, ``"cuda:0"`` ...
        dtype: ``"auto"`` (bf16 on CUDA; on CPU fp32, or int8 where ``lrm_fast.info.int8_auto`` says
            it pays), ``"int8"`` (CPU: dynamic int8 encoder and decoder Linears, ``model/quant.py``),
            ``"fp32"``, ``"bf16"``, ``"fp16"`` or a torch dtype.
        backend: ``"auto" | "fast" | "reference"`` (see docs/architecture.md section 3).
        image_size: encoder input size for converted checkpoints that do not store it (OpenLRM).
    """
    name = DEFAULT_MODEL if path_or_preset is None else os.fspath(path_or_preset)
    dev = _device(device)
    dt = _dtype(dtype, dev)
    if name in PRESETS:
        torch.manual_seed(seed)
        model = LRM(LRMConfig.preset(name), backend=backend)
        model.untrained = True
    else:
        from .io.checkpoint import load_checkpoint

        model = load_checkpoint(_resolve_model_path(name), backend=backend, image_size=image_size)
        model.untrained = False
    model = model.to(dev, dt).eval()
    return quantize_int8(model) if _int8(dtype, dev) else model


def _source_camera(model: LRM, camera, B: int) -> torch.Tensor | None:
    """``camera`` as the model's source-camera feature ``[B, 16|20]`` (None = canonical source camera).

    Accepts the feature itself (``[16|20]`` or ``[B, 16|20]``) or a ``(c2w, intrinsics)`` pair with
    c2w ``[4, 4] | [B, 4, 4]`` (OpenGL, already normalized) and intrinsics ``[4] | [B, 4]`` (fx, fy, cx, cy
    divided by the image size)."""
    if camera is None:
        return None
    if not model.cfg.uses_camera:
        raise ValueError(f"model {model.cfg.name!r} takes no source camera (it was trained without one); pass camera=None")
    kind = model.cfg.camera.feature
    want = FEATURE_DIMS[kind]
    if isinstance(camera, (tuple, list)):
        if len(camera) != 2:
            raise ValueError("camera must be a feature tensor or a (c2w [B, 4, 4], intrinsics [B, 4]) pair")
        c2w, K = (torch.as_tensor(c, dtype=torch.float32) for c in camera)
        if c2w.shape[-2:] != (4, 4) or c2w.dim() not in (2, 3):
            raise ValueError(f"camera c2w must be [4, 4] or [B, 4, 4], got {tuple(c2w.shape)}")
        if K.shape[-1] != 4 or K.dim() not in (1, 2):
            raise ValueError(f"camera intrinsics must be [4] or [B, 4] (fx, fy, cx, cy), got {tuple(K.shape)}")
        camera = camera_features(c2w.reshape(-1, 4, 4), K.reshape(-1, 4).expand(c2w.reshape(-1, 4, 4).shape[0], 4), kind)
    camera = torch.as_tensor(camera, dtype=torch.float32)
    if camera.dim() == 1:
        camera = camera[None]
    if camera.dim() != 2 or camera.shape[-1] != want:
        raise ValueError(f"camera feature must be [{want}] or [B, {want}] ({kind}), got {tuple(camera.shape)}")
    if camera.shape[0] == 1 and B > 1:
        camera = camera.expand(B, -1)
    if camera.shape[0] != B:
        raise ValueError(f"{camera.shape[0]} cameras for {B} images")
    if not torch.isfinite(camera).all():
        raise ValueError("camera contains NaN or inf")
    return camera


def _as_image_list(images) -> list:
    """A path / PIL / array / tensor, a list of them, or a batched tensor/array -> list of single images."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("no images given")
        return list(images)
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(images.unbind(0))
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images]


@torch.inference_mode()
def reconstruct(model: LRM, images, camera=None, preprocess: bool | str = True,
                remove_background: str = "auto") -> "Reconstruction":
    """Image(s) -> ``Reconstruction`` (triplanes ``[B, 3, C, H, W]``).

    Args:
        images: a path, PIL image, numpy array (``[H, W]``, ``[H, W, 3|4]``, uint8/uint16 or float in
            [0, 1]), tensor (``[3|4, H, W]``), a list of those, or a batch ``[B, 3|4, H, W]`` / ``[B, H, W, 3|4]``.
        camera: None (the canonical source camera, as OpenLRM's inference), a feature ``[B, 16|20]``
            or a ``(c2w, intrinsics)`` pair; see ``_source_camera``.
        preprocess: True: the model family's own preprocessing (``preprocess_mode``: TripoSR's
            ``run.py`` for TripoSR checkpoints, OpenLRM's inferrer for OpenLRM ones, else
            ``lrm_fast.io.images.preprocess``); a name (``"default"``, ``"triposr"``, ``"openlrm"``)
            picks one; False only composites and resizes (``"default"`` without recentering).
        remove_background: how an opaque image's background is cut out first: ``"auto"`` (rembg
            when installed with its model file on disk, else the built-in method), ``"rembg"``,
            ``"builtin"`` or ``"none"`` (used as is); see ``lrm_fast.io.background``. An image with
            a real alpha channel is always used as is.
    """
    items = _as_image_list(images)
    size, bg, ratio = input_spec(model)
    mode = preprocess_mode(model, preprocess)
    batch = torch.stack([prepare_image(im, size, bg, ratio if preprocess is not False else 0.0, mode,
                                       remove_background)
                         for im in items])
    return reconstruct_prepared(model, batch, camera)


def input_spec(model: LRM) -> tuple[int, float, float]:
    """``(image_size, background, foreground_ratio)``: how ``model``'s encoder input is prepared
    (plain numbers, so worker processes can prepare images without the model)."""
    enc = model.cfg.encoder
    return int(enc.image_size), model.cfg.input_background, float(enc.foreground_ratio)


def preprocess_mode(model: LRM, preprocess: bool | str = True) -> str:
    """The preprocessing name (``lrm_fast.config.PREPROCESS``) that ``reconstruct(preprocess=...)``
    uses: a name as given, True the model's family (``lrm_fast.config.preprocess_for``), False
    ``"default"``."""
    from .config import PREPROCESS, preprocess_for

    if preprocess is True:
        return preprocess_for(model.cfg)
    if preprocess is False:
        return "default"
    if preprocess not in PREPROCESS:
        raise ValueError(f"unknown preprocess {preprocess!r}; choose True, False or one of {', '.join(PREPROCESS)}")
    return preprocess


def prepare_image(image, size: int, background: float, foreground_ratio: float,
                  mode: str = "default", remove_background: str = "auto") -> torch.Tensor:
    """One image (path, PIL, array, tensor) -> the encoder input ``[3, size, size]`` (CPU fp32): an
    opaque image's background is cut out first by ``remove_background`` (see ``reconstruct``), then
    the preprocessing ``mode`` (``lrm_fast.io.images.prepare``) makes the input."""
    from .io.background import remove_background as _cut
    from .io.images import load_image, prepare

    return prepare(_cut(load_image(image), remove_background), size, mode, background, foreground_ratio)


@torch.inference_mode()
def reconstruct_prepared(model: LRM, batch: torch.Tensor, camera=None) -> "Reconstruction":
    """Prepared inputs ``[B, 3, S, S]`` (from ``prepare_image``) -> ``Reconstruction``."""
    p = next(model.parameters())
    cam = _source_camera(model, camera, batch.shape[0])
    planes = model.forward_planes(batch.to(p.device, p.dtype), None if cam is None else cam.to(p.device, p.dtype))
    return Reconstruction(model, planes, batch)


# ``model.reconstruct(images, camera=None)``: the same function as a method of the model (the model
# layer cannot import this one, which loads images; see the docstring of ``model/lrm.py``)
LRM.reconstruct = reconstruct


def occupancy_grid(model, planes: torch.Tensor, resolution: int | None = None, max_memory=None) -> OccupancyGrid:
    """The occupancy grid of ``planes`` as reconstructions build it (``field.occupancy.proven_occupancy``
    at ``cfg.render``'s box, ``occupancy_tau``, ``ray_path`` and, by default, ``occupancy_resolution``)."""
    cfg = model.cfg.render
    res = int(cfg.occupancy_resolution if resolution is None else resolution)
    return proven_occupancy(model.field, planes, res, cfg.box_min, cfg.box_max, cfg.occupancy_tau,
                            max_memory=max_memory, path=cfg.ray_path)


def check_max_memory(max_memory, name: str = "max_memory"):
    """``max_memory`` as given when it is a valid budget (bytes, a size string, a ``MemoryBudget``, None),
    else a one-line ``ValueError`` naming ``name`` (``--max-memory`` for the CLI)."""
    if not isinstance(max_memory, MemoryBudget):
        try:
            parse_memory(max_memory)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    return max_memory


@contextmanager
def renderer_budget(model, max_memory):
    """``model.renderer.max_memory`` set to ``max_memory`` for one call and restored after: the renderer
    sizes its ray chunks from it. None leaves the renderer's own setting (its default)."""
    r = model.renderer
    if max_memory is None:
        yield
        return
    old = getattr(r, "max_memory", None)
    r.max_memory = MemoryBudget.resolve(max_memory, next(model.parameters()).device)
    try:
        yield
    finally:
        r.max_memory = old


@dataclass
class Reconstruction:
    """Triplanes of a batch of images plus the model that renders them.

    ``triplane [B, 3, C, H, W]`` (model dtype/device), ``inputs [B, 3, S, S]`` (the preprocessed
    images in [0, 1], CPU fp32)."""

    model: LRM
    triplane: torch.Tensor
    inputs: torch.Tensor | None = _dc_field(default=None, repr=False)
    _grids: dict = _dc_field(default_factory=dict, repr=False, compare=False)  # occupancy(), per resolution

    @property
    def batch_size(self) -> int:
        return self.triplane.shape[0]

    def _cameras(self, cameras, azimuths, elevations, distance, focal):
        B, dev = self.batch_size, self.triplane.device
        cam = self.model.cfg.camera
        if cameras is not None:
            if isinstance(cameras, (tuple, list)) and len(cameras) == 2:
                c2w, K = (torch.as_tensor(c, dtype=torch.float32, device=dev) for c in cameras)
            else:
                c2w, K = torch.as_tensor(cameras, dtype=torch.float32, device=dev), None
            if c2w.shape[-2:] != (4, 4) or c2w.dim() not in (3, 4):
                raise ValueError(f"render cameras must be c2w [V, 4, 4] or [B, V, 4, 4], got {tuple(c2w.shape)}")
            if c2w.dim() == 3:
                c2w = c2w[None].expand(B, -1, -1, -1)
            if c2w.shape[0] != B:
                raise ValueError(f"cameras for batch {c2w.shape[0]} but {B} reconstructions")
            V = c2w.shape[1]
            if K is None:
                K = default_intrinsics(cam.source_focal if focal is None else focal, device=dev)
            if K.shape[-1] != 4:
                raise ValueError(f"render intrinsics must be [..., 4] (fx, fy, cx, cy), got {tuple(K.shape)}")
            K = K.expand(B, V, 4) if K.dim() < 3 else K
            if K.shape != (B, V, 4):
                raise ValueError(f"render intrinsics must broadcast to [B, V, 4] = {(B, V, 4)}, got {tuple(K.shape)}")
            if not (torch.isfinite(c2w).all() and torch.isfinite(K).all()):
                raise ValueError("render cameras contain NaN or inf")
            return c2w, K
        az = np.asarray([0.0] if azimuths is None else azimuths, dtype=np.float64).reshape(-1) + cam.front_azimuth
        el = np.asarray(0.0 if elevations is None else elevations, dtype=np.float64).reshape(-1)
        if el.size not in (1, az.size) and az.size != 1:
            raise ValueError(f"{az.size} azimuths but {el.size} elevations (give one, or one per azimuth)")
        d = cam.source_distance if distance is None else float(distance)
        c2w = orbit_cameras(az, el, d, device=dev)
        V = c2w.shape[0]
        K = default_intrinsics(cam.source_focal if focal is None else focal, device=dev).expand(B, V, 4)
        return c2w.expand(B, -1, -1, -1), K

    @torch.inference_mode()
    def occupancy(self, resolution: int | None = None, max_memory=None) -> OccupancyGrid:
        """The occupancy grid of these triplanes (``lrm_fast.field.occupancy``), built on first use
        (``resolution^3`` cells, default ``cfg.render.occupancy_resolution``; field queries chunked
        from ``max_memory``) and cached here, so every later render reuses it."""
        res = int(self.model.cfg.render.occupancy_resolution if resolution is None else resolution)
        if res not in self._grids:
            self._grids[res] = occupancy_grid(self.model, self.triplane, res, max_memory)
        return self._grids[res]

    def _grid_for_render(self, exact: bool | None, max_memory=None, samples: int | None = None) -> OccupancyGrid | None:
        """None (the exact render) when asked, when ``cfg.render.skip_empty`` is off, or where the
        renderer cannot skip (unfused OpenLRM fields); else the cached grid.
        By default (``exact=None``) a GPU renders exactly: the CUDA kernels of skipping have not yet
        run on a GPU (``tests/test_occupancy.py::test_packed_cuda_matches_cpu``); ``exact=False``
        skips there too. Also by default, a render of fewer than ``GRID_SAMPLES_RATIO`` x the grid's
        lattice points in dense samples (``samples``) does not build the grid: the exact render costs
        less than building it (a 32 x 32 view of the fitted TripoSR field: 5x). A grid built earlier is used."""
        cfg = self.model.cfg.render
        auto = exact is None
        if auto:
            exact = not cfg.skip_empty or self.triplane.is_cuda
        if exact or not self.model.renderer.can_skip(self.triplane):
            return None
        res = int(cfg.occupancy_resolution)
        if auto and samples is not None and res not in self._grids and \
                samples < GRID_SAMPLES_RATIO * self.triplane.shape[0] * (2 * res + 1) ** 3:
            return None
        grid = self.occupancy(max_memory=max_memory)
        if auto and self.model.renderer.occupied_fraction(grid) > cfg.skip_max_occupied:
            return None  # mostly occupied: skipping would cost more than it saves
        return grid

    @torch.inference_mode()
    def render(self, cameras=None, *, azimuths=None, elevations=None, distance: float | None = None,
               resolution: int = 128, focal: float | None = None, background=None,
               views_per_chunk: int | None = None, progress: bool = False,
               exact: bool | None = None, max_memory=None) -> dict[str, torch.Tensor]:
        """Render views of every reconstruction.

        Either ``cameras`` (c2w ``[V, 4, 4] | [B, V, 4, 4]``, or a ``(c2w, intrinsics [.., 4])`` pair,
        OpenGL c2w in the model's normalized world) or an orbit: ``azimuths`` / ``elevations`` in
        degrees (azimuth 0 = the input view), ``distance`` and normalized ``focal`` (default: the
        model's source camera). Returns ``rgb [B, V, H, W, 3]``, ``depth [B, V, H, W]``, ``opacity``.
        ``exact``: True renders every sample (bit for bit the renderer without a grid); False skips
        empty space through ``occupancy()``; None (default) follows ``cfg.render.skip_empty``.
        ``max_memory``: the working memory the renderer's ray chunks and the occupancy grid may hold
        (bytes or ``"4GB"``; None: the renderer's default, a share of the device's free memory).
        """
        if int(resolution) < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        check_max_memory(max_memory)
        c2w, K = self._cameras(cameras, azimuths, elevations, distance, focal)
        V = c2w.shape[1]
        step = V if views_per_chunk is None else max(1, int(views_per_chunk))
        chunks = range(0, V, step)
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="render", unit="view" if step == 1 else f"x{step} views", leave=False)
        B, H = self.triplane.shape[0], int(resolution)
        grid = self._grid_for_render(exact, max_memory, B * V * H * H * self.model.cfg.render.samples_per_ray)
        with renderer_budget(self.model, max_memory):
            outs = [self.model.render(self.triplane, c2w[:, s:s + step], K[:, s:s + step], int(resolution),
                                      background=background, occupancy=grid) for s in chunks]
        return {k: torch.cat([o[k] for o in outs], 1) for k in outs[0]}

    def turntable(self, n_views: int = 36, resolution: int = 128, elevation: float = 15.0,
                  distance: float | None = None, progress: bool = False, exact: bool | None = None,
                  max_memory=None) -> torch.Tensor:
        """``rgb [B, n_views, H, W, 3]`` on a circle starting at the input view (``exact``, ``max_memory``:
        see ``render``)."""
        if int(n_views) < 1:
            raise ValueError(f"n_views must be >= 1, got {n_views}")
        az = np.linspace(0.0, 360.0, int(n_views), endpoint=False)
        return self.render(azimuths=az, elevations=elevation, distance=distance, resolution=resolution,
                           views_per_chunk=1 if progress else None, progress=progress, exact=exact,
                           max_memory=max_memory)["rgb"]

    def mesh(self, resolution: int | None = None, threshold: float | None = None, index: int = 0,
             largest_component: bool = False, coarse_to_fine: bool = True, progress: bool = False,
             texture: bool = False, texture_size: int = DEFAULT_TEXTURE_SIZE, faces: int | None = None,
             watertight: bool = False, max_memory=None):
        """Colored mesh (``trimesh.Trimesh``, vertex colors from the field) of reconstruction ``index``.

        Defaults per model: ``cfg.render.mesh_resolution`` / ``mesh_threshold`` (OpenLRM 384 / 3.0,
        TripoSR 256 / 25.0); an untrained preset (random weights) uses ``threshold="auto"``.
        See ``lrm_fast.mesh.extract_mesh``.

        ``faces``: decimate to at most this many faces first (vertex colors re-queried at the new
        vertices). ``texture=True``: UV atlas (xatlas) and a ``texture_size``^2 (power of two, >= 16)
        colour texture baked from the field at each texel's surface point (``TextureVisuals`` with a
        PBR ``baseColorTexture``); see ``lrm_fast.texture``. ``watertight=True``: where the object
        reaches the box, the box's faces close it (``extract_mesh``), so the mesh has no open boundary.
        ``max_memory``: the working memory of the grid, its field queries and the texture bake (bytes
        or ``"4GB"``; None: a share of the device's free memory); the mesh is the same whatever it is."""
        from .mesh import extract_mesh

        check_max_memory(max_memory)
        if not -self.batch_size <= index < self.batch_size:
            raise ValueError(f"index {index} out of range for {self.batch_size} reconstructions")
        texture_size, faces = check_texture_args(texture_size, faces)
        if threshold is None and getattr(self.model, "untrained", False):
            threshold = "auto"
        planes = self.triplane[index:index + 1] if index >= 0 else self.triplane[index:][:1]
        mesh = extract_mesh(self.model, planes, resolution=resolution,
                            threshold=threshold, largest_component=largest_component,
                            coarse_to_fine=coarse_to_fine, progress=progress, watertight=watertight,
                            max_memory=max_memory)
        if texture or faces is not None:
            mesh = texture_mesh(mesh, field_color_fn(self.model, planes), texture_size, faces, texture=bool(texture),
                                max_memory=max_memory)
        return mesh

    def save(self, out_dir: str, formats=("glb", "mp4"), n_views: int = 36, resolution: int = 128,
             mc_resolution: int | None = None, threshold: float | None = None, names=None,
             elevation: float = 15.0, fps: int = 12, coarse_to_fine: bool = True,
             progress: bool = False, texture: bool = False, texture_size: int = DEFAULT_TEXTURE_SIZE,
             faces: int | None = None, model_name: str | None = None, watertight: bool = False,
             max_memory=None) -> list[str]:
        """Write each reconstruction into ``out_dir``; every file is written atomically.

        ``formats``: any of the registered formats (``lrm_fast.io.export.EXPORTERS``): ``glb obj ply``
        (mesh), ``mp4`` (turntable video; gif if ffmpeg is missing), ``gif``, ``png`` (turntable frames
        ``<name>_viewNNN.png`` + ``<name>_input.png``), ``triplane`` (``<name>.triplane.safetensors``
        for ``lrm-fast render``, recording ``model_name``, default the config's name).
        ``names``: one file stem per reconstruction (default ``object00``, ``object01``, ...).
        ``texture=True`` (glb/obj only): UV-textured meshes (see ``mesh``); glb embeds the PNG, obj
        writes ``<name>.mtl`` and ``<name>_texture.png`` beside it. ``faces``: face budget.
        ``watertight``: close the mesh with the box's faces where the object reaches the box (``mesh``).
        ``max_memory``: the working memory of each render and mesh (``render``, ``mesh``).
        Returns the written paths (per reconstruction: meshes, frames, videos, the triplane)."""
        formats = check_formats(formats, texture=texture)
        texture_size, faces = check_texture_args(texture_size, faces)
        check_max_memory(max_memory)
        names = [f"object{b:02d}" for b in range(self.batch_size)] if names is None else list(names)
        if len(names) != self.batch_size:
            raise ValueError(f"{len(names)} names for {self.batch_size} reconstructions")
        kinds = kinds_of(formats)
        os.makedirs(out_dir, exist_ok=True)
        written: list[str] = []
        frames = None
        if kinds & {"frames", "video"}:
            frames = self.turntable(n_views, resolution, elevation, progress=progress, max_memory=max_memory)
        model_name = self.model.cfg.name if model_name is None else model_name
        for b, name in enumerate(names):
            stem = os.path.join(out_dir, name)
            if "mesh" in kinds:
                mesh = self.mesh(mc_resolution, threshold, index=b, coarse_to_fine=coarse_to_fine, progress=progress,
                                 texture=texture, texture_size=texture_size, faces=faces, watertight=watertight,
                                 max_memory=max_memory)
                written += write_kind(formats, "mesh", mesh, stem, texture=texture)
            if "frames" in kinds:
                inp = None if self.inputs is None else self.inputs[b].permute(1, 2, 0)
                written += write_kind(formats, "frames", frames[b], stem, input=inp)
            if "video" in kinds:
                written += write_kind(formats, "video", frames[b], stem, fps=fps)
            if "triplane" in kinds:
                written += write_kind(formats, "triplane", self.triplane[b], stem, model=model_name)
        return written
