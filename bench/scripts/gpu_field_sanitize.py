"""Issue 18's open illegal memory access: the first thing to run when a GPU is lent (~2-3 min).

    python -m bench.scripts.gpu_field_sanitize --out bench/results/<stem>-sanitize.md     # the matrix below
    python -m bench.scripts.gpu_field_sanitize --one c80 w8                               # one run, in-process

What is known (docs/readme/gpu.md): on the H200 (triton 3.6) ``cudaErrorIllegalAddress`` followed
fp32 runs of the fused field at the default launch (64 points, 8 warps): the test
``concat-L2-C80-...-float32`` and ``measure_gpu``'s sweep right after ``64,8,64,8`` (raised by the
next CUDA call, before any ``64,4,64,4`` launch). bf16 never failed. The kernels' own addresses
are in bounds for every block size (``tests/test_triplane_bounds.py``, the interpreter under
``tests/bounds_check.py``); the interpreter does not model the compiled code. Compiled for sm_90
with triton 3.6, only the fp32 kernels at 8 warps contain ``wgmma ... m64n8k8 ... tf32``
instructions (the [64, 16]-wide output-layer tiles split over two warpgroups); at 4 warps, or with
the output padded to 32 columns, they do not (upstream has H100 illegal-address reports for
n8 TF32 wgmma, triton-lang/triton#10629, and for multi-dot kernels on sm_90, #10486).

The matrix tells these apart, each run in its own process (an illegal address poisons the CUDA
context), fp32 unless named:

* variants: ``w8`` = the default (64 points, 8 warps, output tile 16), ``w4`` = 4 warps,
  ``w8op32`` = 8 warps with the output tile padded to 32 columns (no n8 wgmma);
* cases: ``c80`` = the failing test's shape (concat, 2 layers, C=80, 64x64 planes, 5000 points),
  ``base`` = the base field (concat, 4 layers, C=48, 2^16 points), ``base16`` = its bf16 (control);
* ``sweep``: ``measure_gpu``'s failing sequence replayed through the public op (``run_sweep``), a
  synchronize and a CUDA-checked call after every step;
* in value order (``_matrix``): ``c80`` x ``w8`` plain, the sweep, ``compute-sanitizer --tool
  memcheck`` on ``c80`` x ``w8`` (names the faulting kernel, instruction and address space: global vs
  shared), the other variants and cases plain (forward + backward ``--repeat`` times with a
  synchronize after every launch), memcheck on ``base`` and on the other variants last.

Each run prints ``RESULT {json}``: ok, the error, max errors vs the reference, and the wgmma shapes
of the compiled kernels. The markdown table goes to ``--out``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import torch

CASES = {
    "c80": dict(agg="concat", layers=2, C=80, H=64, W=64, N=5000, dtype="float32"),
    "base": dict(agg="concat", layers=4, C=48, H=64, W=64, N=1 << 16, dtype="float32"),
    "base16": dict(agg="concat", layers=4, C=48, H=64, W=64, N=1 << 16, dtype="bfloat16"),
    "tiny": dict(agg="concat", layers=3, C=20, H=5, W=7, N=70, dtype="float32"),   # CPU smoke test
}
VARIANTS = {"w8": (64, 8, 16), "w4": (64, 4, 16), "w8op32": (64, 8, 32)}   # block, warps, min output tile


def _wgmma_shapes(compiled) -> list[str]:
    ptx = getattr(compiled, "asm", {}).get("ptx", "") if compiled is not None else ""
    return sorted(set(re.findall(r"wgmma\.mma_async\.sync\.aligned\.(m\d+n\d+k\d+)\.\w+\.(\w+)\.", ptx)))


def run_one(case_name: str, variant: str, repeat: int, device: str) -> dict:
    """Forward + backward kernels launched directly (as the op does), synced after each launch."""
    from lrm_fast.kernels import triplane_mlp as K
    from lrm_fast.ops.triplane_mlp import _cdiv, _pack_mlp, _triplane_mlp_ref

    case = CASES[case_name]
    block, warps, op_min = VARIANTS[variant]
    dtype = getattr(torch, case["dtype"])
    g = torch.Generator().manual_seed(0)
    C, H, W, N, L = case["C"], case["H"], case["W"], case["N"], case["layers"]
    planes = torch.randn(1, 3, C, H, W, generator=g)
    pts = torch.rand(1, N, 3, generator=g) * 2.4 - 1.2
    dims = [3 * C] + [64] * (L - 1) + [4]
    ws = [torch.randn(dims[i + 1], dims[i], generator=g) / dims[i] ** 0.5 for i in range(L)]
    bs = [torch.randn(dims[i + 1], generator=g) * 0.1 for i in range(L)]
    v_out = torch.randn(1, N, 4, generator=g)
    planes, pts, v_out = planes.to(device), pts.to(device), v_out.to(device)
    ws, bs = [w.to(device) for w in ws], [b.to(device) for b in bs]

    (w0, b0, wm, bm, wl, bl), (CP, HP, OP) = _pack_mlp(ws, bs, C, case["agg"], dtype)
    if OP < op_min:   # pad the output tile: zero columns change nothing but the dot shapes
        wl = torch.cat([wl, wl.new_zeros(HP, op_min - OP)], 1)
        bl = torch.cat([bl, bl.new_zeros(op_min - OP)])
        OP = op_min
    pl = planes.to(dtype)
    planes_cl = pl.permute(0, 1, 3, 4, 2).contiguous()
    meta = dict(AGG=K.AGG_CODES[case["agg"]], ACT=K.ACT_CODES["relu"], NUM_MID=L - 2, BLOCK_N=block,
                CP=CP, HP=HP, OP=OP, PREC="tf32x3")
    grid = (_cdiv(N, block), 1)
    P = max(1, min(grid[0], 64))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    res = dict(case=case_name, variant=variant, block=block, warps=warps, OP=OP, dtype=case["dtype"])
    t = time.perf_counter()
    for _ in range(repeat):
        out = torch.empty(1, N, 4, device=device, dtype=dtype)
        kf = K.triplane_mlp_fwd_kernel[grid](planes_cl, pts, w0, b0, wm, bm, wl, bl, out, N, H, W, C, 4,
                                             num_warps=warps, **meta)
        sync()
        f32 = dict(device=device, dtype=torch.float32)
        v_planes = torch.zeros(1, 3, H, W, C, **f32)
        parts = [torch.zeros(P, *w0.shape, **f32), torch.zeros(P, HP, **f32), torch.zeros(P, *wm.shape, **f32),
                 torch.zeros(P, *bm.shape, **f32), torch.zeros(P, HP, OP, **f32), torch.zeros(P, OP, **f32)]
        kb = K.triplane_mlp_bwd_kernel[grid](planes_cl, pts, w0, b0, wm, bm, wl, bl, v_out.to(dtype).contiguous(),
                                             v_planes, *parts, N, H, W, C, 4, P, num_warps=warps, **meta)
        sync()
    res["seconds"] = round(time.perf_counter() - t, 3)
    res["wgmma_fwd"], res["wgmma_bwd"] = _wgmma_shapes(kf), _wgmma_shapes(kb)
    # numbers vs the fp32 reference (loose: tf32x3 / bf16); a fault usually shows before this
    pr = planes.clone().requires_grad_()
    ref = _triplane_mlp_ref(pr, pts, ws, bs, case["agg"], "relu")
    (v_ref,) = torch.autograd.grad(ref, [pr], v_out)
    rel = lambda a, b: ((a.double() - b.double()).abs().max() / (b.double().abs().max() + 1e-9)).item()  # noqa: E731
    res["out_rel_err"] = rel(out, ref)
    res["v_planes_rel_err"] = rel(v_planes.permute(0, 1, 4, 2, 3), v_ref)
    res["partials_finite"] = bool(all(torch.isfinite(t).all().item() for t in parts))
    tol = 1e-3 if dtype == torch.float32 else 5e-2
    res["ok"] = bool(res["out_rel_err"] < tol and res["v_planes_rel_err"] < tol and res["partials_finite"])
    return res


SWEEP_CONFIGS = ("64,8,64,8", "64,4,64,4")


def run_sweep(repeat: int, device: str, points: int = 1 << 18) -> dict:
    """Replay of ``measure_gpu``'s failing launch-configuration sweep through the public op (base field
    C=48, ``points`` = 2^18 points, fwd + ``.float().sum().backward()``, bf16 then fp32 per configuration), with a
    device synchronize and a CUDA-checked call (``torch.Generator(device=...)``, the call that raised
    in the H200 run) after every step: ``steps`` lists what completed, so the first step after which
    the context is broken is named even where the fault is reported late."""
    T = importlib.import_module("lrm_fast.ops.triplane_mlp")
    res = dict(case="sweep", variant="+".join(SWEEP_CONFIGS), steps=[])
    old = os.environ.get("LRM_FAST_TRIPLANE_LAUNCH")
    step = "start"
    try:
        for cfg in SWEEP_CONFIGS:
            os.environ["LRM_FAST_TRIPLANE_LAUNCH"] = cfg
            for dtype in (torch.bfloat16, torch.float32):
                step = f"{cfg} {str(dtype)[6:]} inputs"
                g = torch.Generator(device=device).manual_seed(0)
                planes = torch.randn(1, 3, 48, 64, 64, device=device, generator=g).to(dtype).requires_grad_()
                pts = torch.rand(1, points, 3, device=device, generator=g) * 2 - 1
                dims = [3 * 48, 64, 64, 64, 4]
                ws = [(torch.randn(dims[i + 1], dims[i], device=device, generator=g) / dims[i] ** 0.5).requires_grad_()
                      for i in range(4)]
                bs = [torch.zeros(dims[i + 1], device=device).requires_grad_() for i in range(4)]
                for r in range(repeat):
                    step = f"{cfg} {str(dtype)[6:]} fwd+bwd #{r}"
                    T.triplane_mlp(planes, pts, ws, bs, backend="triton").float().sum().backward()
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                        torch.Generator(device=device)
                res["steps"].append(f"{cfg} {str(dtype)[6:]} x{repeat}")
        res["ok"] = True
    except Exception as e:  # noqa: BLE001 - the point of the replay
        res.update(ok=False, error=f"at '{step}': {type(e).__name__}: {e}"[:600])
    finally:
        if old is None:
            os.environ.pop("LRM_FAST_TRIPLANE_LAUNCH", None)
        else:
            os.environ["LRM_FAST_TRIPLANE_LAUNCH"] = old
    return res


def _matrix(repeat: int, cases=("c80", "base", "base16")):
    """The runs in value order (the suite gives the matrix ~80 s; the first runs must be the telling
    ones): the failing test's shape plain, the sweep's replay, memcheck on that shape, then the launch
    variants and the other cases, memcheck of the base field last."""
    sanitizer = shutil.which("compute-sanitizer") or next(
        (p for p in ("/usr/local/cuda/bin/compute-sanitizer", "/usr/local/cuda/compute-sanitizer/compute-sanitizer")
         if os.path.exists(p)), None)
    memcheck = ([sanitizer, "--tool", "memcheck", "--print-limit", "20", "--show-backtrace", "device"]
                if sanitizer else None)
    first = cases[0]
    runs = [([], first, "w8", repeat, 60)]
    if first != "tiny":
        runs.append(([], "sweep", "w8", 5, 90))
    if memcheck:
        runs.append((memcheck, first, "w8", 1, 180))
    runs += [([], first, v, repeat, 60) for v in VARIANTS if v != "w8"]
    runs += [([], c, v, repeat, 60) for c in cases[1:] for v in VARIANTS]
    if memcheck:
        runs += [(memcheck, c, "w8", 1, 180) for c in cases[1:2]]
        runs += [(memcheck, first, v, 1, 180) for v in VARIANTS if v != "w8"]
    return sanitizer, runs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", nargs=2, metavar=("CASE", "VARIANT"), help="one run in this process")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--points", type=int, default=1 << 18, help="points of the sweep replay (a CPU test: few)")
    ap.add_argument("--cases", default="c80,base,base16", help="matrix cases (tiny: a CPU smoke test)")
    ap.add_argument("--no-sanitizer", action="store_true", help="plain runs only")
    ap.add_argument("--out", help="markdown file for the matrix's table")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_LIMIT", 300)) - 10,
                    help="seconds for the matrix; runs that would start after it are skipped")
    a = ap.parse_args(argv)
    if a.one:
        try:
            res = (run_sweep(a.repeat, a.device, a.points) if a.one[0] == "sweep"
                   else run_one(*a.one, a.repeat, a.device))
        except Exception as e:  # noqa: BLE001 - reported, then the exit code says it
            res = dict(case=a.one[0], variant=a.one[1], ok=False, error=f"{type(e).__name__}: {e}"[:600])
        print("RESULT " + json.dumps(res), flush=True)
        sys.exit(0 if res.get("ok") else 1)

    t_end = time.perf_counter() + a.budget
    sanitizer, runs = _matrix(a.repeat, tuple(a.cases.split(",")))
    if a.no_sanitizer:
        sanitizer, runs = None, [r for r in runs if not r[0]]
    env = dict(os.environ, CUDA_LAUNCH_BLOCKING="1")
    rows = [f"# Triton field illegal-address matrix ({torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'})",
            "", f"compute-sanitizer: {sanitizer or 'not found'}; CUDA_LAUNCH_BLOCKING=1; repeat {a.repeat}", "",
            "| tool | case | variant | ok | s | error / sanitizer | fwd wgmma | bwd wgmma |", "|---|---|---|---|---:|---|---|---|"]
    for tool, case, variant, rep, limit in runs:
        left = t_end - time.perf_counter()
        if left < 15:
            rows.append(f"| {'memcheck' if tool else 'plain'} | {case} | {variant} | SKIPPED (budget) | | | | |")
            continue
        cmd = tool + [sys.executable, "-m", "bench.scripts.gpu_field_sanitize", "--one", case, variant,
                      "--repeat", str(rep), "--device", a.device]
        t = time.perf_counter()
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=min(limit, left))
            text, rc = p.stdout + p.stderr, p.returncode
        except subprocess.TimeoutExpired as e:
            text, rc = f"TIMEOUT {e.timeout:.0f}s " + ((e.stdout or b"").decode(errors="replace") if isinstance(
                e.stdout, bytes) else (e.stdout or "")), -1
        print(f"==== {' '.join(cmd)} (rc {rc}, {time.perf_counter() - t:.0f}s)\n{text[-6000:]}", flush=True)
        res = next((json.loads(ln[7:]) for ln in text.splitlines() if ln.startswith("RESULT ")), {})
        san = [ln.strip("= ").strip() for ln in text.splitlines() if ln.startswith("=========") and (
            "Invalid" in ln or "ERROR SUMMARY" in ln or "at " in ln and "in " in ln)][:4]
        err = (res.get("error") or "") + (" / " if san else "") + " ; ".join(san)
        rows.append(f"| {'memcheck' if tool else 'plain'} | {case} | {variant} | {res.get('ok', False)} (rc {rc}) | "
                    f"{time.perf_counter() - t:.0f} | {err.replace('|', '/')[:300]} | "
                    f"{' '.join('/'.join(s) for s in res.get('wgmma_fwd', []))} | "
                    f"{' '.join('/'.join(s) for s in res.get('wgmma_bwd', []))} |")
    text = "\n".join(rows) + "\n"
    print(text)
    if a.out:
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
