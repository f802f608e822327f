"""Where CPU image -> triplane time goes: per module (forward hooks), per aten op (torch.profiler),
and the decoder's self-attention shape under each CPU attention kernel.

Run: ``python -m bench.scripts.profile_planes [--preset base] [--threads 1] [--attention]``. Absolute times
depend on the machine and its load; read the fractions and the ratios of one run
(docs/readme/bench.md, "CPU image -> triplane").
"""
from __future__ import annotations

import argparse
import collections
import time

import torch
import torch.nn.functional as F

from lrm_fast.config import LRMConfig
from lrm_fast.model.lrm import LRM


def per_module(model: LRM, image: torch.Tensor) -> tuple[float, dict]:
    """Wall time of one ``forward_planes`` and of each hooked module inside it (seconds)."""
    times, start = collections.defaultdict(float), {}
    mods = {"encoder": model.encoder, "camera": model.camera_embedder, "decoder": model.transformer,
            "upsampler": model.upsampler}
    first = next(iter(model.transformer.layers)) if hasattr(model.transformer, "layers") else None
    if first is not None:
        mods.update({f"decoder block 0 / {n}": m for n, m in first.named_children()})
    handles = []
    for name, mod in mods.items():
        if mod is None:
            continue
        handles.append(mod.register_forward_pre_hook(lambda m, i, n=name: start.__setitem__(n, time.perf_counter())))
        handles.append(mod.register_forward_hook(
            lambda m, i, o, n=name: times.__setitem__(n, times[n] + time.perf_counter() - start[n])))
    with torch.no_grad():
        model.forward_planes(image)  # warm-up
        times.clear()
        t0 = time.perf_counter()
        model.forward_planes(image)
        total = time.perf_counter() - t0
    for h in handles:
        h.remove()
    return total, dict(times)


def attention_kernels(tokens: int, dim: int, heads: int, repeat: int = 2) -> dict:
    """Best-of-``repeat`` seconds of one self-attention of the decoder's shape, per SDPA backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(1, heads, tokens, dim // heads) for _ in range(3))
    out = {}
    for name, backend in (("flash (CPU)", SDPBackend.FLASH_ATTENTION), ("math", SDPBackend.MATH)):
        with sdpa_kernel(backend):
            F.scaled_dot_product_attention(q, k, v)
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                F.scaled_dot_product_attention(q, k, v)
                best = min(best, time.perf_counter() - t0)
        out[name] = best
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scripts.profile_planes", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="base")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--attention", action="store_true", help="also time the decoder's attention per SDPA kernel")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = LRMConfig.preset(a.preset)
    model = LRM(cfg).eval().requires_grad_(False)
    image = torch.rand(1, 3, cfg.encoder.image_size, cfg.encoder.image_size)
    total, times = per_module(model, image)
    print(f"{a.preset}: image {cfg.encoder.image_size}, decoder {cfg.decoder.layers} x {cfg.decoder.dim}, "
          f"{a.threads} thread(s): forward_planes {total:.2f} s")
    for name, t in times.items():
        print(f"  {name:32s} {t:8.3f} s {100 * t / total:5.1f} %")
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model.forward_planes(image)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    if a.attention:
        tokens = 3 * cfg.triplane.low_res ** 2
        for name, t in attention_kernels(tokens, cfg.decoder.dim, cfg.decoder.heads).items():
            print(f"  self-attention [{tokens} tokens, {cfg.decoder.heads} heads] {name:12s} {t:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
