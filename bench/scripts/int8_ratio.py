"""fp32 vs int8 image -> triplane on this CPU, interleaved in one process: the numbers of
``lrm_fast.info.INT8_MEASURED``.

    python -m bench.scripts.int8_ratio --preset base --preset triposr --rounds 4 [--engine onednn --engine x86]

Per preset (random weights at its sizes, batch 1): the fp32 inference runner (``LRM.compile_planes``,
backend ``fast``) and one runner per engine of ``model.quant.quantize_int8``'s copy, each called once per
round in turn, so drift in the machine's speed (a shared box) hits every case alike. Prints each round,
the medians and the ratios fp32 / int8, the triplane's relative error, and the load average before and
after. Write the ratio of the engine ``quantize_int8`` uses by default into ``INT8_MEASURED`` under this
CPU's ``info.cpu_int8_class()``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lrm_fast.config import LRMConfig
from lrm_fast.info import cpu_int8_class
from lrm_fast.model.lrm import LRM
from lrm_fast.model.quant import quantize_int8


def measure(preset: str, rounds: int, engines: list[str]) -> dict[str, float]:
    torch.manual_seed(0)
    model = LRM(LRMConfig.preset(preset)).eval().requires_grad_(False).set_backend("fast")
    S = model.cfg.encoder.image_size
    image = torch.rand(1, 3, S, S, generator=torch.Generator().manual_seed(0))
    runners = {"fp32": model.compile_planes(1, warmup_iters=1)}
    runners.update({e: quantize_int8(model, e).compile_planes(1, warmup_iters=1) for e in engines})
    print(f"{preset}: load before {os.getloadavg()}", flush=True)
    times = {k: [] for k in runners}
    with torch.no_grad():
        want = runners["fp32"](image)
        for e in engines:
            print(f"  {e}: triplane relative error {float((runners[e](image) - want).norm() / want.norm()):.4f}")
        for i in range(rounds):
            for k, run in runners.items():
                t0 = time.perf_counter()
                run(image)
                times[k].append(time.perf_counter() - t0)
            print(f"  round {i}: " + "  ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {e: med["fp32"] / med[e] for e in engines}
    print(f"{preset}: median " + "  ".join(f"{k} {v:.2f} s" for k, v in med.items()) + "  fp32/int8 "
          + "  ".join(f"{e} {r:.2f}x" for e, r in ratios.items()) + f"  load after {os.getloadavg()}", flush=True)
    return ratios


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", action="append", help="preset(s) to time (default: base)")
    p.add_argument("--engine", action="append", help="int8 engine(s) (default: onednn)")
    p.add_argument("--rounds", type=int, default=4)
    a = p.parse_args(argv)
    print(f"cpu int8 class: {cpu_int8_class()}  torch threads {torch.get_num_threads()}")
    for preset in a.preset or ["base"]:
        measure(preset, a.rounds, a.engine or ["onednn"])


if __name__ == "__main__":
    main()
