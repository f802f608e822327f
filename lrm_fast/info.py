"""``lrm_fast.info()``: what is installed, which kernel path each op takes and why, preset sizes."""
from __future__ import annotations

import importlib
import platform


def _version(mod: str) -> str:
    try:
        return getattr(importlib.import_module(mod), "__version__", "installed")
    except Exception as e:  # noqa: BLE001 - report any import failure as text
        return f"not available ({type(e).__name__})"


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The kernel's CPU feature flags (the first ``flags`` line of ``cpuinfo``); [] where unreadable."""
    try:
        with open(cpuinfo) as f:
            return next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return []


def cpu_bf16_native(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU feature that runs bf16 matmuls natively (``amx_bf16`` or ``avx512_bf16``, from the
    kernel's CPU flags), or None. Without one, oneDNN emulates bf16 and it is slower than fp32 (the
    demo model: 1.6 s fp32 vs 9.3 s bf16 on an AVX2 EPYC), so ``dtype="auto"`` stays fp32 on every
    CPU; ``dtype="bf16"`` is there to try where this names a feature."""
    flags = cpu_flags(cpuinfo)
    return next((x for x in ("amx_bf16", "avx512_bf16") if x in flags), None)


# The int8 instruction classes, best first: the int8 dot-product instructions the oneDNN / FBGEMM
# kernels use where present (AMX tiles, AVX-512 VNNI, AVX-VNNI), else AVX2's vpmaddubsw.
INT8_CLASSES = ("amx_int8", "avx512_vnni", "avx_vnni", "avx2")

# The ship rule of dtype="int8" (model/quant.py): image -> triplane at least this many times faster
# than our fp32 path (renders within 35 dB PSNR of fp32 are a test: tests/test_quant.py).
INT8_RULE = 1.5

# fp32 / int8 image -> triplane per CPU int8 class and preset, measured by bench/scripts/int8_ratio.py
# (the int8 runner against the fp32 runner in one process, median of interleaved rounds, random weights
# at the preset's sizes; bench/suites/bench_image_to_triplane.py times the same two cases). dtype="auto"
# picks int8 on a class only when every preset recorded for it is at >= INT8_RULE; a class with no
# measurement stays fp32.
INT8_MEASURED: dict[str, dict[str, float]] = {
    # the 2-core AMD EPYC this was written on, oneDNN engine: base on the quiet machine (load 1.8,
    # 2026-12-07: 3 rounds, fp32 9.31 s / int8 6.67 s median); triposr under load 8-11 (2 rounds, 0.96 and
    # 1.44x; the loaded base run read 1.63x, FBGEMM's x86 engine 1.52x). Both miss the rule: fp32 on AVX2.
    "avx2": {"base": 1.40, "triposr": 1.13},
}


def cpu_int8_class(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The best int8 instruction class of ``INT8_CLASSES`` the CPU has (from its flags), or None."""
    flags = cpu_flags(cpuinfo)
    return next((x for x in INT8_CLASSES if x in flags), None)


def int8_auto(cpuinfo: str = "/proc/cpuinfo") -> tuple[bool, str]:
    """Whether ``dtype="auto"`` on the CPU runs the encoder and decoder in int8, and why: only where
    ``INT8_MEASURED`` records every preset of the CPU's int8 class at ``INT8_RULE`` or more (a table,
    not a timing per call: the rule is a benchmark)."""
    isa = cpu_int8_class(cpuinfo)
    if isa is None:
        return False, "no AVX2 / VNNI int8 instructions: fp32"
    if isa not in INT8_MEASURED:
        return False, (f"int8 has no recorded measurement on {isa} (bench/scripts/int8_ratio.py): fp32 "
                       "(dtype='int8' to try it)")
    ratios = INT8_MEASURED[isa]
    said = ", ".join(f"{p} {r:.2f}x" for p, r in ratios.items())
    if min(ratios.values()) < INT8_RULE:
        return False, (f"int8 image->triplane measured {said} fp32 on {isa}, not all >= the {INT8_RULE}x rule: "
                       "fp32 (dtype='int8' still runs it)")
    return True, f"int8 image->triplane measured {said} fp32 on {isa}, all >= the {INT8_RULE}x rule: int8"


def budget_text(devices=("cpu",)) -> str:
    """The default memory budget (``max_memory`` / ``--max-memory`` not given) on each device, now."""
    from .memory import DEFAULT_SHARE, MemoryBudget

    parts = [f"{dev} {MemoryBudget.resolve(None, dev).bytes / 2 ** 30:.2f} GiB" for dev in devices]
    return (f"default memory budget (max_memory / --max-memory not given: {DEFAULT_SHARE:.0%} of what is free now): "
            + ", ".join(parts))


def info_text(presets=None, device=None) -> str:
    import torch

    from . import ops
    from .config import PRESETS, LRMConfig
    from .model.lrm import count_parameters

    lines = [f"lrm_fast {_version('lrm_fast')}  python {platform.python_version()}  torch {torch.__version__}",
             f"timm {_version('timm')}  triton {_version('triton')}  xformers {_version('xformers')}"]
    ok, why = ops._ext.load_extension()
    lines.append("extension lrm_fast._C: loaded" if ok else f"extension lrm_fast._C: {why}")
    if ops._ext.defined("cpu_isa"):  # csrc/cpu_isa.h: the CPU build the C++ kernels run
        lines.append(f"cpu instruction set of the C++ kernels: {torch.ops.lrm_fast.cpu_isa(None)} "
                     "(LRM_FAST_CPU_ISA=avx2|plain caps it)")
    bf16 = cpu_bf16_native()
    lines.append(f"cpu bf16: native ({bf16}); dtype='auto' stays fp32, dtype='bf16' to try it" if bf16 else
                 "cpu bf16: not native (no AMX / AVX-512 BF16: emulated, slower than fp32); dtype='auto' is fp32")
    pick, why = int8_auto()
    lines.append(f"cpu int8 (encoder + decoder Linears, dtype='auto' on cpu -> {'int8' if pick else 'fp32'}): {why}")
    cuda = torch.cuda.is_available()
    lines.append(f"cuda: {torch.cuda.get_device_name(0) if cuda else 'no GPU visible'}")
    lines.append(budget_text(["cpu", "cuda"] if cuda else ["cpu"]))
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


def checkpoint_text(path: str, image_size: int | None = None) -> str:
    """What a checkpoint folder/file is and how it would load: format, the choices its files do not
    settle (OpenLRM's input size, where a ViT's facts come from), the config and parameter counts.
    Reads the weights' names and shapes; builds nothing."""
    import os

    from .io.checkpoint import load_foreign
    from .model.lrm import count_parameters

    notes: dict = {}
    cfg, sd, fmt = load_foreign(os.fspath(path), image_size, notes=notes)
    e, d, t, f, r = cfg.encoder, cfg.decoder, cfg.triplane, cfg.field, cfg.render
    ov = e.overrides or {}
    lines = [f"checkpoint {path}", f"  format: {fmt}"]
    lines += [f"  {k.replace('_', ' ')}: {v}" for k, v in notes.items()]
    lines += [f"  encoder: {e.kind} {e.timm_name} at {e.image_size} px, width {e.feat_dim}"
              + (f", depth {ov['depth']}, heads {ov['num_heads']}" if ov else "")
              + (f", patch {ov['patch_size']}" if "patch_size" in ov else "")
              + (f", LayerNorm eps {e.norm_eps:g}" if e.norm_eps is not None else ""),
              f"  decoder: {d.layers} x {d.dim} x {d.heads} heads, {d.block} blocks"
              + ("" if cfg.uses_camera else " (no camera modulation)"),
              f"  triplane: {t.low_res} -> {t.high_res}, {t.channels} channels; field MLP {f.layers} x {f.hidden} "
              f"{f.activation}, density {f.density_activation}",
              f"  render: {r.sampler} sampler, {r.samples_per_ray} samples per ray, box [{r.box_min:g}, {r.box_max:g}]"]
    c = count_parameters(cfg)
    lines.append(f"  parameters: {c['total'] / 1e6:.2f}M ("
                 + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in c.items() if k != "total") + ")")
    return "\n".join(lines)


def info(**kwargs) -> None:
    print(info_text(**kwargs))
