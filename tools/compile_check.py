"""Compile the triplane_mlp kernels for a CUDA target on a machine without a GPU.

The interpreter (``TRITON_INTERPRET=1``) runs the kernels as numpy code and accepts things real
compilation rejects (non-power-of-two blocks, small ``tl.dot`` shapes, dtype mixes), and it says
nothing about registers. This goes through Triton's real pipeline (TTIR -> TTGIR -> LLVM -> PTX)
and the bundled ``ptxas`` (-> cubin), then prints ptxas's register / spill report:

    python tools/compile_check.py                  # base field, sm_90, fp32 + bf16
    python tools/compile_check.py --arch 80 --dtypes fp16 --C 80

Seconds per kernel (up to a minute on a loaded 2-core machine). Not a test: a
developer check to run after editing the kernels (kept out of the installed package).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time


def compile_report(kernel, dtype: str, consts: dict, num_warps: int, arch: int) -> str:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = kernel.arg_names
    first_int = names.index("N")
    compute_ptrs = ("planes", "w0", "wm", "wl", "out", "v_out")
    sig = {}
    for i, n in enumerate(names):
        if n in consts:
            sig[n] = "constexpr"
        elif i < first_int:
            sig[n] = "*" + (dtype if n in compute_ptrs else "fp32")
        else:
            sig[n] = "i32"
    t = time.time()
    cc = triton.compile(ASTSource(kernel, sig, consts), target=GPUTarget("cuda", arch, 32),
                        options={"num_warps": num_warps})
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(cc.asm["ptx"])
        err = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}{'a' if arch >= 90 else ''}", src,
                              "-o", src + ".o"], capture_output=True, text=True).stderr
    info = [ln.split(":", 1)[-1].strip() for ln in err.splitlines()
            if ("registers" in ln or "spill" in ln) and "warpgroup" not in ln]
    # shared memory: what triton's launcher checks against the device limit (OutOfResources);
    # lrm_fast.ops.triplane_mlp.SMEM_MEASURED holds these numbers
    return f"{time.time() - t:.0f}s compile; shared {cc.metadata.shared} B; " + " | ".join(info)


def main(argv=None):
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("unset TRITON_INTERPRET: this check compiles for real")
    from lrm_fast.ops.triplane_mlp import _launch_cfg, _pow2
    from lrm_fast.kernels import triplane_mlp as K

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--C", type=int, default=48)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--aggregate", default="concat", choices=sorted(K.AGG_CODES))
    ap.add_argument("--activation", default="relu", choices=sorted(K.ACT_CODES))
    ap.add_argument("--only", choices=("fwd", "bwd"))
    a = ap.parse_args(argv)
    for dt in a.dtypes.split(","):
        for which, kernel in (("fwd", K.triplane_mlp_fwd_kernel), ("bwd", K.triplane_mlp_bwd_kernel)):
            if a.only and which != a.only:
                continue
            block, warps = _launch_cfg(backward=which == "bwd")
            consts = dict(AGG=K.AGG_CODES[a.aggregate], ACT=K.ACT_CODES[a.activation],
                          NUM_MID=a.layers - 2, BLOCK_N=block, CP=_pow2(a.C), HP=_pow2(a.hidden),
                          OP=16, PREC="tf32x3" if dt == "fp32" else "tf32")
            print(f"sm_{a.arch} {which} {dt} C={a.C} block={block} warps={warps}: "
                  f"{compile_report(kernel, dt, consts, warps, a.arch)}", flush=True)


if __name__ == "__main__":
    main()
