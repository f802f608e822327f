"""Issue 18's first-GPU-run measurements, cheap (< ~40 s), one markdown section per item.

    python -m bench.scripts.measure_gpu --out bench/results/<stem>-measurements.md

* Triton triplane_mlp kernels: registers, spills and shared memory of the compiled kernels (fp32 and
  bf16, base field C=48 and TripoSR's C=40), from the compiled kernel (n_regs, n_spills, metadata.shared).
* a few ``LRM_FAST_TRIPLANE_LAUNCH`` configurations timed (forward + backward, 2^18 points, bf16 / fp32).
* C=40 vs C=48 forward time (alignment / vectorised gathers).
* compositing (lrm_fast._C, one thread per ray) at 512x512 rays x 128 samples: achieved GB/s
  (bytes = the inputs read + the outputs written once).
* fused compositing from raw samples (``composite_samples``) at 512x512 rays x 128 samples, forward
  and backward, Triton (tiled) vs cpp (CUDA, a thread per ray) vs reference: GB/s by
  ``bench.lib.roofline.composite_samples_bytes`` and its fraction of the measured device-to-device
  copy bandwidth (issue 25's goal: >= 50%).
Each item is independent: a failure is written into the file and the next item runs.
"""
from __future__ import annotations

import argparse
import importlib
import os
import time
import traceback


import torch


def triplane_mlp_module():
    """The op's module. ``from lrm_fast.ops import triplane_mlp`` gives the *function* that
    ``lrm_fast/ops/__init__.py`` re-exports (the first GPU run failed on that), so import by name."""
    return importlib.import_module("lrm_fast.ops.triplane_mlp")


def _time(fn, reps=10):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def _field_inputs(C, hidden=64, layers=4, n=1 << 18, dtype=torch.bfloat16, grad=False):
    g = torch.Generator(device="cuda").manual_seed(0)
    planes = torch.randn(1, 3, C, 64, 64, device="cuda", generator=g).to(dtype).requires_grad_(grad)
    pts = torch.rand(1, n, 3, device="cuda", generator=g) * 2 - 1
    dims = [3 * C] + [hidden] * (layers - 1) + [4]
    ws = [(torch.randn(dims[i + 1], dims[i], device="cuda", generator=g) / dims[i] ** 0.5).requires_grad_(grad)
          for i in range(layers)]
    bs = [torch.zeros(dims[i + 1], device="cuda").requires_grad_(grad) for i in range(layers)]
    return planes, pts, ws, bs


def kernels_report(lines):
    T = triplane_mlp_module()

    lines += ["## Triton triplane_mlp: registers, spills, shared memory (compiled kernels)", "",
              "| kernel | dtype | C | block,warps | n_regs | n_spills | shared B |", "|---|---|---:|---|---:|---:|---:|"]
    from lrm_fast.kernels import triplane_mlp as K

    for dtype in (torch.float32, torch.bfloat16):
        for C in (48, 40):
            planes, pts, ws, bs = _field_inputs(C, dtype=dtype, n=4096, grad=True)
            out = T.triplane_mlp(planes, pts, ws, bs, backend="triton")
            out.float().sum().backward()
            torch.cuda.synchronize()
            for which, kern in (("fwd", K.triplane_mlp_fwd_kernel), ("bwd", K.triplane_mlp_bwd_kernel)):
                cache = getattr(kern, "device_caches", None) or getattr(kern, "cache", None)
                found = []
                try:
                    caches = cache.values() if isinstance(cache, dict) else [cache]
                    for c in caches:
                        c0 = c[0] if isinstance(c, tuple) else c
                        for ck in (c0.values() if isinstance(c0, dict) else []):
                            found.append(ck)
                except Exception:  # noqa: BLE001
                    pass
                for ck in found[-1:]:
                    md = ck.metadata
                    blk = T._launch_cfg(which == "bwd")
                    lines.append(f"| {which} | {str(dtype)[6:]} | {C} | {blk[0]},{blk[1]} | {getattr(ck, 'n_regs', '?')} | "
                                 f"{getattr(ck, 'n_spills', '?')} | {getattr(md, 'shared', '?')} |")
                if not found:
                    lines.append(f"| {which} | {str(dtype)[6:]} | {C} | ? | (no compiled kernel found in the cache) | | |")
    lines.append("")


DEADLINE = [float("inf")]   # perf_counter() after which the remaining configurations are skipped


def launch_report(lines):
    T = triplane_mlp_module()

    lines += ["## LRM_FAST_TRIPLANE_LAUNCH configurations (base field C=48, 2^18 points, fwd+bwd ms)", "",
              "| launch fwd_block,fwd_warps,bwd_block,bwd_warps | bf16 | fp32 |", "|---|---:|---:|"]
    old = os.environ.get("LRM_FAST_TRIPLANE_LAUNCH")
    try:
        for cfg in ("64,8,64,8", "64,4,64,4", "128,8,64,8", "32,4,32,4"):
            os.environ["LRM_FAST_TRIPLANE_LAUNCH"] = cfg
            row = []
            for dtype in (torch.bfloat16, torch.float32):
                if time.perf_counter() > DEADLINE[0]:   # each new configuration is a compile (seconds)
                    row.append("skipped (budget)")
                    continue
                planes, pts, ws, bs = _field_inputs(48, dtype=dtype, grad=True)

                def step():
                    T.triplane_mlp(planes, pts, ws, bs, backend="triton").float().sum().backward()
                try:
                    row.append(f"{_time(step, 5) * 1e3:.2f}")
                except Exception as e:  # noqa: BLE001
                    row.append(f"error: {type(e).__name__}")
            lines.append(f"| {cfg} | " + " | ".join(row) + " |")
    finally:
        if old is None:
            os.environ.pop("LRM_FAST_TRIPLANE_LAUNCH", None)
        else:
            os.environ["LRM_FAST_TRIPLANE_LAUNCH"] = old
    lines.append("")


def channels_report(lines):
    T = triplane_mlp_module()

    lines += ["## C = 40 (TripoSR) vs C = 48: forward, 2^18 points, ms (both pad to 64 channels in the MLP)", "",
              "| dtype | C=40 | C=48 |", "|---|---:|---:|"]
    for dtype in (torch.bfloat16, torch.float32):
        row = []
        for C in (40, 48):
            planes, pts, ws, bs = _field_inputs(C, dtype=dtype)
            with torch.no_grad():
                row.append(f"{_time(lambda: T.triplane_mlp(planes, pts, ws, bs, backend='triton')) * 1e3:.3f}")
        lines.append(f"| {str(dtype)[6:]} | " + " | ".join(row) + " |")
    lines.append("")


def composite_report(lines):
    from lrm_fast.ops import composite

    R, S = 512 * 512, 128
    rgb = torch.rand(R, S, 3, device="cuda")
    sigma = torch.rand(R, S, device="cuda")
    deltas = torch.full((R, S), 0.01, device="cuda")
    depths = torch.linspace(1, 3, S, device="cuda").expand(R, S).contiguous()
    bg = torch.ones(3, device="cuda")
    lines += ["## Compositing at 512x512 rays x 128 samples (fp32, no grad)", "",
              "| backend | ms | GB/s (inputs read + outputs written once) |", "|---|---:|---:|"]
    nbytes = R * S * 4 * (3 + 3) + R * 4 * 5
    for be in ("cpp", "reference"):
        try:
            with torch.no_grad():
                t = _time(lambda: composite(rgb, sigma, deltas, depths, bg, backend=be))
            lines.append(f"| {be} | {t * 1e3:.3f} | {nbytes / t / 1e9:.0f} |")
        except Exception as e:  # noqa: BLE001
            lines.append(f"| {be} | error: {type(e).__name__}: {str(e)[:120]} | |")
    lines.append("(compare with `python -m bench.lib.roofline`: the H100's ~3.35 TB/s, H200's ~4.8 TB/s)")
    lines.append("")


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Measured device-to-device copy bandwidth, bytes/s (a copy reads and writes each byte)."""
    src = torch.empty(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    t = _time(lambda: dst.copy_(src), reps=20)
    return 2 * nbytes / t


def composite_samples_report(lines):
    import importlib

    from bench.lib.roofline import composite_samples_bytes

    C = importlib.import_module("lrm_fast.ops.composite")  # (the package exports the function of that name)
    copy = copy_bandwidth()
    R, S = 512 * 512, 128
    g = torch.Generator(device="cuda").manual_seed(0)
    t = torch.sort(torch.rand(R, S, device="cuda", generator=g) * 2 + 1.5, -1).values
    o = torch.tensor([0.0, 0.0, -2.5], device="cuda").expand(R, 3).contiguous()
    d = torch.nn.functional.normalize(torch.randn(R, 3, device="cuda", generator=g) * 0.2
                                      + torch.tensor([0.0, 0.0, 1.0], device="cuda"), dim=-1)
    raw = torch.randn(R, S, 4, device="cuda", generator=g)
    bg = torch.ones(R, 3, device="cuda")
    lines += [f"## compositing 512x512x128 (composite_samples, fp32): device-to-device copy {copy / 1e9:.0f} GB/s",
              "", "| backend | pass | ms | GB/s (bench.lib.roofline.composite_samples_bytes) | fraction of copy |",
              "|---|---|---:|---:|---:|"]
    default_tile = C.TRITON_TILE
    runs = [("triton", default_tile), ("cpp", None), ("reference", None), ("triton", 512), ("triton", 2048)]
    for be, tile in runs:
        if tile is not None and tile != default_tile and time.perf_counter() > DEADLINE[0] - 15:
            lines.append(f"| triton (tile {tile}) | | skipped: the step's budget | | |")
            continue
        name = be if tile is None else f"triton (tile {tile})"
        C.TRITON_TILE = tile or default_tile
        for bwd in (False, True):
            try:
                if bwd:
                    r = raw.clone().requires_grad_()
                    out = C.composite_samples(r, t, o, d, bg, backend=be)
                    cots = [torch.ones_like(x) for x in out]
                    fwd_t = _time(lambda: C.composite_samples(r, t, o, d, bg, backend=be), reps=5)
                    tt = _time(lambda: torch.autograd.grad(C.composite_samples(r, t, o, d, bg, backend=be), r, cots),
                               reps=5) - fwd_t
                else:
                    with torch.no_grad():
                        tt = _time(lambda: C.composite_samples(raw, t, o, d, bg, backend=be), reps=10)
                gbs = composite_samples_bytes(R, S, 4, backward=bwd) / tt
                lines.append(f"| {name} | {'backward' if bwd else 'forward'} | {tt * 1e3:.3f} | {gbs / 1e9:.0f} | "
                             f"{gbs / copy:.2f} |")
            except Exception as e:  # noqa: BLE001
                lines.append(f"| {name} | {'backward' if bwd else 'forward'} | error: {type(e).__name__}: "
                             f"{str(e)[:120]} | | |")
    C.TRITON_TILE = default_tile
    lines += ["(backward: forward + backward time minus the forward's; the reference runs autograd "
              "through its [R, S] intermediates)", ""]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_LIMIT", 40)) - 8,
                    help="seconds; launch configurations after this are skipped (default: the suite step's limit - 8)")
    a = ap.parse_args(argv)
    DEADLINE[0] = time.perf_counter() + a.budget
    lines = [f"# First-GPU-run measurements ({torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'})",
             ""]
    if not torch.cuda.is_available():
        lines.append("no CUDA device: nothing measured")
    else:
        for item in (composite_samples_report, kernels_report, composite_report, channels_report, launch_report):
            t = time.perf_counter()
            try:
                item(lines)
            except Exception:  # noqa: BLE001 - record and go on
                lines += [f"{item.__name__} failed:", "```", traceback.format_exc()[-1500:], "```", ""]
            print(f"{item.__name__}: {time.perf_counter() - t:.1f}s", flush=True)
            with open(a.out + ".tmp", "w") as f:   # written after each item: a time limit keeps what ran
                f.write("\n".join(lines) + "\n")
            os.replace(a.out + ".tmp", a.out)
    with open(a.out + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(a.out + ".tmp", a.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
