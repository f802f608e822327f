"""``lrm_fast.info()``: what is installed, which kernel path each op takes and why, preset sizes."""
from __future__ import annotations

import importlib
import platform


def _version(mod: str) -> str:
    try:
        return getattr(importlib.import_module(mod), "__version__", "installed")
    except Exception as e:  # noqa: BLE001 - report any import failure as text
        return f"not available ({type(e).__name__})"


def info_text(presets=None, device=None) -> str:
    import torch

    from . import ops
    from .config import PRESETS, LRMConfig
    from .model.lrm import count_parameters

    lines = [f"lrm_fast {_version('lrm_fast')}  python {platform.python_version()}  torch {torch.__version__}",
             f"timm {_version('timm')}  triton {_version('triton')}  xformers {_version('xformers')}"]
    try:
        from . import _C  # noqa: F401
        lines.append("extension lrm_fast._C: loaded")
    except ImportError as e:
        lines.append(f"extension lrm_fast._C: not built ({e})")
    cuda = torch.cuda.is_available()
    lines.append(f"cuda: {torch.cuda.get_device_name(0) if cuda else 'no GPU visible'}")
    devices = [device] if device else (["cpu", "cuda"] if cuda else ["cpu"])
    for dev in devices:
        for dtype in ((torch.float32, torch.bfloat16) if dev.startswith("cuda") else (torch.float32,)):
            lines.append(f"kernel paths on {dev} {str(dtype).replace('torch.', '')} (backend='auto'):")
            lines += ["  " + s for s in ops.describe_all(dev, dtype)]
    lines.append("presets (parameters, built on the meta device):")
    for name in presets or PRESETS:
        c = count_parameters(LRMConfig.preset(name))
        parts = "  ".join(f"{k} {v / 1e6:.2f}M" for k, v in c.items() if k != "total")
        lines.append(f"  {name:6s} total {c['total'] / 1e6:8.2f}M   ({parts})")
    return "\n".join(lines)


def info(**kwargs) -> None:
    print(info_text(**kwargs))
