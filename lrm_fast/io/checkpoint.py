"""Checkpoints: ours (``model.safetensors`` + ``config.json``), format detection, and the one entry
point that loads any supported checkpoint (``load_checkpoint``).

Formats, detected from the files and the state dict's keys (never from the folder's name); the
converters of the originals live beside this file, one per format:

==============  ==================================================================================
``lrm_fast``    ours: ``config.json`` (``LRMConfig.to_json``) + ``model.safetensors`` (our names).
``openlrm-1.1`` OpenLRM v1.1 (``openlrm-mix-*-1.1``): ``config.json`` with ``transformer_dim`` ...
                + ``model.safetensors`` (names of ``openlrm.models.modeling_lrm.ModelLRM``; DINOv2
                vendored from facebookresearch/dinov2 under ``encoder.model.``). ``io/openlrm.py``.
``openlrm-1.0`` OpenLRM v1.0: ``model.pth`` = ``{"weights": state_dict, "kwargs": {"model": ...}}``
                (``LRMGenerator``; DINO v1 as a Hugging Face ``ViTModel`` under ``encoder.model.``;
                pos-embed / deconv inside ``transformer.``). ``io/openlrm.py``.
``triposr``     TripoSR: ``config.yaml`` + ``model.ckpt`` (a plain state dict of ``tsr.system.TSR``).
                ``io/triposr.py``.
==============  ==================================================================================

The image encoders' weight maps (DINOv2, HF ViT -> timm) both converters share: ``io/vit_weights.py``.

Our own files written before the model variants are read as they were: ``config.json`` through
``LRMConfig.from_dict`` (``config.upgrade_config_dict``), the weights through ``upgrade_state_dict``
(the old names of the TripoSR decoder's Transformer1D parts; the ``renderer.field.*`` copies of the
tied field), which the trainer's ``init_from`` uses too.

Every pickle is read with ``torch.load(weights_only=True)``. Missing, unexpected and mis-shaped keys
are reported by name.
"""
from __future__ import annotations

import json
import os

import torch

from ..config import LRMConfig
from ..model.encoder import IMAGENET_MEAN, IMAGENET_STD, ImageEncoder
from ..model.lrm import LRM, TIED_FIELD_PREFIX, drop_tied_field_copies
from .export import atomic_path
from .openlrm import convert_openlrm, openlrm_source_size  # noqa: F401 - public here too
from .triposr import convert_triposr, read_yaml, triposr_vit_config  # noqa: F401 - public here too
from .vit_weights import DINO_VITB16_CONFIG, hf_vit_config  # noqa: F401 - public here too

FORMATS = ("lrm_fast", "openlrm-1.1", "openlrm-1.0", "triposr")


# The model holds its field once (``field.*``); files written while the renderer also held it as a
# submodule carry ``renderer.field.*`` copies, dropped on load. Names our files used before the model
# variants (TripoSR's Transformer1D parts sat beside the decoder) -> today's.
TIED_PREFIX = TIED_FIELD_PREFIX
_RENAMED = (("transformer_in_norm.", "transformer.in_norm."), ("transformer_proj_in.", "transformer.proj_in."),
            ("transformer_proj_out.", "transformer.proj_out."))


def is_tied_copy(key: str) -> bool:
    """Whether a state-dict key is an old file's ``renderer.field.*`` copy of a ``field.*`` tensor."""
    return key.startswith(TIED_PREFIX)


def upgrade_state_dict(sd: dict) -> dict:
    """Our state dict in today's names (a new dict): old Transformer1D names renamed, and the
    ``renderer.field.*`` copies that files written before the field was stored once carry dropped
    where they equal their ``field.*`` twin (else kept, to be reported as unexpected)."""
    out = {}
    for k, v in sd.items():
        for a, b in _RENAMED:
            if k.startswith(a):
                k = b + k[len(a):]
                break
        out[k] = v
    drop_tied_field_copies(out)
    return out


# ---------------------------------------------------------------------------------------------
# reading / writing
# ---------------------------------------------------------------------------------------------
def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a pickle (loaded with ``weights_only=True``)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    sd = _load_pickle(path)
    for key in ("state_dict", "model", "weights"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: does not hold a state dict of tensors")
    return sd


def load_encoder_weights(encoder: ImageEncoder, path: str) -> None:
    """Load an image encoder's backbone weights from a local timm/torch state-dict file
    (safetensors or pickle); the classifier head may be missing."""
    sd = read_state_dict(path)
    missing, unexpected = encoder.vit.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("head")]
    if missing or unexpected:
        raise ValueError(f"{path}: encoder weights do not match {encoder.cfg.timm_name}: missing "
                         f"{missing[:8]}, unexpected {unexpected[:8]}")


def _load_pickle(path: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, foreign pickle, not a torch file at all
        raise ValueError(f"{path}: not a loadable torch checkpoint with weights_only=True ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _atomic_write_bytes(path: str, write) -> None:
    tmp = atomic_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _own_state_dict(model, dtype=None) -> dict[str, torch.Tensor]:
    return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous().clone()
            for k, v in model.state_dict().items()}


def save_checkpoint(model, out_dir: str, dtype: torch.dtype | None = None) -> list[str]:
    """Write ``model.safetensors`` + ``config.json`` into ``out_dir``, each atomically (temp file + rename).

    Returns the two paths."""
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    sd = _own_state_dict(model, dtype)
    st = os.path.join(out_dir, "model.safetensors")
    _atomic_write_bytes(st, lambda tmp: save_file(sd, tmp, metadata={"format": "lrm_fast"}))
    cj = os.path.join(out_dir, "config.json")

    def _w(tmp):
        with open(tmp, "w") as f:
            f.write(model.cfg.to_json())
    _atomic_write_bytes(cj, _w)
    return [st, cj]


# ---------------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------------
def _files(path: str) -> dict[str, str]:
    """Which known files the path gives: keys config_json, safetensors, pth, yaml, ckpt."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        names = {n: os.path.join(path, n) for n in os.listdir(path)}
        out = {}
        if "config.json" in names:
            out["config_json"] = names["config.json"]
        if "config.yaml" in names:
            out["yaml"] = names["config.yaml"]
        for n, p in sorted(names.items()):
            if n.endswith(".safetensors"):
                out.setdefault("safetensors", p)
            elif n.endswith(".pth") or n.endswith(".pt") or n.endswith(".bin"):
                out.setdefault("pth", p)
            elif n.endswith(".ckpt"):
                out.setdefault("ckpt", p)
        return out
    d = os.path.dirname(os.path.abspath(path))
    out = {}
    if path.endswith(".safetensors"):
        out["safetensors"] = path
    elif path.endswith(".ckpt"):
        out["ckpt"] = path
    else:
        out["pth"] = path
    for n, k in (("config.json", "config_json"), ("config.yaml", "yaml")):
        if os.path.exists(os.path.join(d, n)):
            out[k] = os.path.join(d, n)
    return out


def detect_format(keys) -> str:
    """The checkpoint format from its state-dict keys (see module docstring)."""
    keys = list(keys)
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has("image_tokenizer.") and has("backbone."):
        return "triposr"
    if has("synthesizer.decoder.") and has("transformer.pos_embed"):
        return "openlrm-1.0"
    if has("synthesizer.decoder.") and has("pos_embed"):
        return "openlrm-1.1"
    if has("field.net.") and has("encoder.vit."):
        return "lrm_fast"
    raise ValueError("unrecognized checkpoint: expected lrm_fast (field.net.*), OpenLRM (synthesizer.decoder.*) "
                     f"or TripoSR (image_tokenizer.*, backbone.*) keys; first keys: {keys[:6]}")


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _load_into(cfg, sd: dict, source: str, backend: str, names: dict | None = None):
    """``names`` (optional): our key -> the file's key, for error messages about converted keys."""
    with torch.device("meta"):
        model = LRM(cfg, backend=backend)
    want = model.state_dict()
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    names = names or {}
    shapes = [f"{k}{f' (file: {names[k]})' if k in names else ''} {tuple(sd[k].shape)} vs {tuple(want[k].shape)}"
              for k in sorted(set(sd) & set(want)) if tuple(sd[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys {missing[:8]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys {unexpected[:8]}")
        if shapes:
            parts.append(f"mis-shaped {len(shapes)} (checkpoint vs model) {shapes[:8]}")
        raise ValueError(f"{source}: state dict does not match the config: " + "; ".join(parts))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()},
                          strict=False, assign=True)
    return _materialize_buffers(model)


def load_foreign(path: str, image_size: int | None = None, names: dict | None = None, notes: dict | None = None):
    """(LRMConfig, our state dict, format) from any supported checkpoint path (file or folder).

    ``names``: a dict to fill with our key -> the file's key for every tensor taken over unchanged
    under another name (error messages name what the user's file calls it). ``notes``: a dict to
    fill with choices the file does not settle (OpenLRM's input size, where the ViT's facts came from)."""
    files = _files(path)
    if "safetensors" in files:
        raw = read_state_dict(files["safetensors"])
    elif "pth" in files:
        raw = _load_pickle(files["pth"])
    elif "ckpt" in files:
        raw = _load_pickle(files["ckpt"])
    else:
        raise FileNotFoundError(f"{path}: no model file (model.safetensors, model.pth or model.ckpt)")
    kwargs = infer = None
    if isinstance(raw, dict) and isinstance(raw.get("kwargs"), dict):  # OpenLRM v1.0 model.pth
        kwargs = raw["kwargs"].get("model", raw["kwargs"])
        infer = raw["kwargs"].get("infer") if isinstance(raw["kwargs"].get("infer"), dict) else None
    if isinstance(raw, dict):
        for key in ("weights", "state_dict", "model"):
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"{path}: does not hold a state dict of tensors")
    fmt = detect_format(raw.keys())
    if fmt == "lrm_fast":
        if "config_json" not in files:
            raise FileNotFoundError(f"{path}: lrm_fast weights without config.json beside them")
        with open(files["config_json"]) as f:
            cfg = LRMConfig.from_dict(json.load(f))
        return cfg, upgrade_state_dict(raw), fmt
    if fmt.startswith("openlrm"):
        if kwargs is None:
            if "config_json" not in files:
                raise FileNotFoundError(f"{path}: OpenLRM weights without config.json (its model kwargs)")
            with open(files["config_json"]) as f:
                kwargs = json.load(f)
        folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        cfg, sd = convert_openlrm(raw, kwargs, fmt, image_size, infer, folder, notes)
        if names is not None:
            origin = {id(v): k for k, v in raw.items()}
            names.update({k: origin[id(v)] for k, v in sd.items() if id(v) in origin and origin[id(v)] != k})
        return cfg, sd, fmt
    y = read_yaml(files["yaml"]) if "yaml" in files else None
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    cfg, sd = convert_triposr(raw, y, image_size, triposr_vit_config(y, folder))
    if names is not None:
        origin = {id(v): k for k, v in raw.items()}
        names.update({k: origin[id(v)] for k, v in sd.items() if id(v) in origin and origin[id(v)] != k})
    return cfg, sd, fmt


def load_checkpoint(path: str, backend: str = "auto", image_size: int | None = None):
    """Any supported checkpoint (ours, OpenLRM v1.0 / v1.1, TripoSR; see module docstring) -> LRM (fp32, cpu).

    ``image_size`` overrides the encoder input size of converted checkpoints (OpenLRM v1.1 does not
    store it; we use its released inference configs: 224 / 336 / 448 px for the 512 / 768 /
    1024-wide decoders, the nearest width's for others; v1.0 stores it in ``kwargs["infer"]``).
    The format found is stored as ``model.checkpoint_format``, the choices the file did not settle
    as ``model.checkpoint_notes`` (``lrm-fast info PATH`` prints both)."""
    names: dict = {}
    notes: dict = {}
    cfg, sd, fmt = load_foreign(path, image_size, names, notes)
    model = _load_into(cfg, sd, path, backend, names)
    model.checkpoint_format = fmt
    model.checkpoint_notes = notes
    return model


def convert_checkpoint(src: str, dst: str, dtype: torch.dtype | None = None, image_size: int | None = None) -> str:
    """Convert any supported checkpoint to ours (folder ``dst``); returns the detected source format."""
    model = load_checkpoint(src, backend="reference", image_size=image_size)
    save_checkpoint(model, dst, dtype)
    return model.checkpoint_format


def _materialize_buffers(model):
    model.encoder.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
    model.encoder.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            raise RuntimeError(f"buffer {name} was not materialized when loading the checkpoint")
    return model.float()
