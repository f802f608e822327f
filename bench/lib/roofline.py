"""Analytic work (FLOPs and bytes moved) per stage and preset, and the achieved fraction of a GPU's peak.

Counting rules (so numbers can be checked against ``torch.utils.flop_counter.FlopCounterMode``):

* **2 FLOPs per multiply-add** (the convention of FlopCounterMode and of vendor peak numbers).
  docs/architecture.md section 6's floors use it too: base image->triplane = 1.15 TFLOP, paper = 2.53 TFLOP.
* Only matrix products are counted for the transformers (Linear, attention QK^T and PV, patch
  embedding and upsampler convolutions); LayerNorm, softmax, GELU add < 2 % and are ignored.
* Field query per point: the MLP's matmuls plus the bilinear taps (3 planes x 4 taps x C
  multiply-adds). Render = field at ``samples`` points per ray (half stratified, half importance;
  every sample is one query) + compositing (~10 FLOPs per sample).
* Bytes are the *ideal* HBM traffic of a fused implementation: weights read once, each
  activation written once and read once per consumer, attention as flash attention (Q, K, V
  read, O written, no score matrix), and for the field/render/mesh stages only the planes, the
  points (when they come from memory) and the outputs: the triplane (a few MB) stays in L2, so
  its bilinear taps are not HBM traffic. Element size: 2 bytes (bf16) unless told.

The floor of a stage is ``max(flops / peak_flops, bytes / bandwidth)``; given a pytest-benchmark
result file, ``achieved()`` reports measured time against it (fraction of peak compute and of
peak bandwidth). Usage::

    python -m bench.lib.roofline                       # table of all presets (work per stage, H100 floors)
    python -m bench.lib.roofline --results bench/results/<date>-<gpu>.json
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
from dataclasses import dataclass

from lrm_fast.config import LRMConfig, PRESETS

# Dense peaks (no sparsity), per second. fp32 = CUDA cores (torch's default fp32 matmul, no TF32).
GPUS = {
    "H100": {"bfloat16": 989e12, "float16": 989e12, "tf32": 494e12, "float32": 67e12, "bandwidth": 3.35e12},
    "H200": {"bfloat16": 989e12, "float16": 989e12, "tf32": 494e12, "float32": 67e12, "bandwidth": 4.8e12},
    "A100": {"bfloat16": 312e12, "float16": 312e12, "tf32": 156e12, "float32": 19.5e12, "bandwidth": 2.04e12},
}

STAGES = ("encoder", "camera", "decoder", "upsampler", "image_to_triplane", "field_query", "render_view",
          "mesh_grid")


@dataclass
class Work:
    flops: float = 0.0
    bytes: float = 0.0

    def __add__(self, other: "Work") -> "Work":
        return Work(self.flops + other.flops, self.bytes + other.bytes)

    def __mul__(self, k: float) -> "Work":
        return Work(self.flops * k, self.bytes * k)

    __rmul__ = __mul__

    def floor_s(self, gpu: str = "H100", dtype: str = "bfloat16") -> float:
        peak = GPUS[gpu]
        return max(self.flops / peak[dtype], self.bytes / peak["bandwidth"])

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else math.inf


def _linear(m: int, k: int, n: int, eb: int, weight: bool = True) -> Work:
    """[m, k] @ [k, n]: 2mkn FLOPs; reads input (+ weight), writes output."""
    return Work(2.0 * m * k * n, eb * (m * k + (k * n if weight else 0) + m * n))


def _attention(b_h_lq_lk_d: tuple, eb: int) -> Work:
    """softmax(QK^T)V for B*heads, Lq x Lk, head dim d: 2 matmuls, flash-style traffic."""
    bh, lq, lk, d = b_h_lq_lk_d
    return Work(2.0 * 2 * bh * lq * lk * d, eb * bh * d * (2 * lq + 2 * lk))


@functools.lru_cache(maxsize=None)
def _vit_arch(timm_name: str, image_size: int, overrides: str) -> dict:
    """Width, depth, heads, MLP width, patch size and prefix tokens of the timm ViT (built on meta)."""
    import os

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import timm

    with torch.device("meta"):
        vit = timm.create_model(timm_name, pretrained=False, num_classes=0, img_size=image_size,
                                **json.loads(overrides))
    blk = vit.blocks[0]
    return {"dim": vit.embed_dim, "depth": len(vit.blocks), "heads": blk.attn.num_heads,
            "mlp": blk.mlp.fc1.out_features, "patch": vit.patch_embed.patch_size[0],
            "prefix": vit.num_prefix_tokens, "mlp_kind": type(blk.mlp).__name__}


def encoder(cfg: LRMConfig, batch: int = 1, eb: int = 2) -> Work:
    """ViT on one ``image_size``^2 image: patch embedding + ``depth`` blocks (all prefix tokens)."""
    e = cfg.encoder
    a = _vit_arch(e.timm_name, e.image_size, json.dumps(e.overrides, sort_keys=True))
    n = (e.image_size // a["patch"]) ** 2
    t, d = n + a["prefix"], a["dim"]
    w = _linear(batch * n, 3 * a["patch"] ** 2, d, eb)
    mlp_in = a["mlp"] if a["mlp_kind"] == "Mlp" else a["mlp"] // 2  # SwiGLU packs 2 halves in fc1
    per = (_linear(batch * t, d, 3 * d, eb) + _attention((batch * a["heads"], t, t, d // a["heads"]), eb)
           + _linear(batch * t, d, d, eb) + _linear(batch * t, d, a["mlp"], eb) + _linear(batch * t, mlp_in, d, eb))
    return w + per * a["depth"]


def encoder_tokens(cfg: LRMConfig) -> int:
    """Tokens handed to the decoder: CLS + patches (registers dropped)."""
    e = cfg.encoder
    a = _vit_arch(e.timm_name, e.image_size, json.dumps(e.overrides, sort_keys=True))
    return 1 + (e.image_size // a["patch"]) ** 2


def camera(cfg: LRMConfig, batch: int = 1, eb: int = 2) -> Work:
    if not cfg.uses_camera:
        return Work()
    raw = 16 if cfg.camera.feature == "principle" else 20
    E = cfg.camera.embed_dim
    return _linear(batch, raw, E, eb) + _linear(batch, E, E, eb)


def decoder_parts(cfg: LRMConfig, batch: int = 1, eb: int = 2) -> dict[str, Work]:
    """Per part, summed over layers: cross-attention, self-attention, MLP, adaLN modulation, final norm."""
    dc = cfg.decoder
    L, D, H = 3 * cfg.triplane.low_res ** 2, dc.dim, dc.heads
    Lc, Dc, Dm = encoder_tokens(cfg), cfg.encoder.feat_dim, cfg.camera.embed_dim
    m, mc = batch * L, batch * Lc
    cross = (_linear(m, D, D, eb) + _linear(mc, Dc, 2 * D, eb) + _attention((batch * H, L, Lc, D // H), eb)
             + _linear(m, D, D, eb))
    self_ = _linear(m, D, 3 * D, eb) + _attention((batch * H, L, L, D // H), eb) + _linear(m, D, D, eb)
    hidden = int(D * dc.mlp_ratio)
    if dc.block == "triposr":  # GEGLU
        mlp = _linear(m, D, 2 * hidden, eb) + _linear(m, hidden, D, eb)
    else:
        mlp = _linear(m, D, hidden, eb) + _linear(m, hidden, D, eb)
    mod = _linear(batch, Dm, 2 * D, eb) * 3 if cfg.uses_camera else Work()
    n = dc.layers
    return {"cross_attn": cross * n, "self_attn": self_ * n, "mlp": mlp * n, "modulation": mod * n}


def decoder(cfg: LRMConfig, batch: int = 1, eb: int = 2) -> Work:
    return sum(decoder_parts(cfg, batch, eb).values(), Work())


def upsampler(cfg: LRMConfig, batch: int = 1, eb: int = 2) -> Work:
    """ConvTranspose2d(D, C, 2, stride 2) on 3 planes of low_res^2 tokens: 4 taps per token."""
    t = cfg.triplane
    return _linear(batch * 3 * t.low_res ** 2, cfg.decoder.dim, 4 * t.channels, eb)


def image_to_triplane(cfg: LRMConfig, batch: int = 1, eb: int = 2) -> Work:
    return encoder(cfg, batch, eb) + camera(cfg, batch, eb) + decoder(cfg, batch, eb) + upsampler(cfg, batch, eb)


def field_mlp_flops_per_point(cfg: LRMConfig) -> float:
    f, C = cfg.field, cfg.triplane.channels
    width_in = 3 * C if f.aggregate == "concat" else C
    macs = width_in * f.hidden + (f.layers - 2) * f.hidden ** 2 + f.hidden * 4
    return 2.0 * macs


def field_query(cfg: LRMConfig, n_points: int, eb: int = 2, points_from_memory: bool = True) -> Work:
    """n_points queries: MLP + 3 x 4 bilinear taps x C; traffic = planes once + points + 4 outputs."""
    C, R = cfg.triplane.channels, cfg.triplane.high_res
    per_point = field_mlp_flops_per_point(cfg) + 2.0 * 3 * 4 * C
    planes = eb * 3 * C * R * R
    io = n_points * (4 * eb + (3 * 4 if points_from_memory else 0))
    return Work(per_point * n_points, planes + io)


def render_view(cfg: LRMConfig, resolution: int, samples: int | None = None, views: int = 1, eb: int = 2) -> Work:
    """views x resolution^2 rays x samples field queries + compositing; writes rgb, depth, opacity (fp32)."""
    s = samples or cfg.render.samples_per_ray
    rays = views * resolution ** 2
    q = field_query(cfg, rays * s, eb, points_from_memory=False)
    return Work(q.flops + 10.0 * rays * s, q.bytes - rays * s * 4 * eb + rays * 5 * 4)


def composite_samples_bytes(rays: int, samples: int, eb: int = 4, backward: bool = False) -> float:
    """Ideal HBM bytes of the fused compositing kernels (``ops.composite_samples``), read once and
    written once, ``eb`` bytes per element. Forward: raw ``[R, S, 4]``, t ``[R, S]``, origins, dirs,
    background ``[R, 3]`` each read; rgb ``[R, 3]``, depth, opacity ``[R]`` written. Backward: the same
    inputs, the saved depth and opacity and the cotangents of the three outputs read; v_raw ``[R, S, 4]``
    written (v_background is a separate ``[R, 3]`` torch op). A kernel at this many bytes per second
    runs at the bandwidth it is compared with (``bench/scripts/measure_gpu.py``: device-to-device copy)."""
    per_ray_in = samples * 5 + 9
    if not backward:
        return float(eb * rays * (per_ray_in + 5))
    return float(eb * rays * (per_ray_in + 2 + 5 + samples * 4))


def mesh_grid(cfg: LRMConfig, grid: int | None = None, eb: int = 2) -> Work:
    """Density on a dense grid^3 (the marching-cubes input); writes one fp32 density per cell."""
    g = grid or cfg.render.mesh_resolution
    q = field_query(cfg, g ** 3, eb, points_from_memory=False)
    return Work(q.flops, q.bytes - g ** 3 * 4 * eb + g ** 3 * 4)


def stage_work(stage: str, cfg: LRMConfig, eb: int = 2, **size) -> Work:
    """Dispatch by stage name (``STAGES``) with size keys batch/resolution/samples/views/grid/points."""
    b = int(size.get("batch", 1))
    if stage == "encoder":
        return encoder(cfg, b, eb)
    if stage == "camera":
        return camera(cfg, b, eb)
    if stage == "decoder":
        return decoder(cfg, b, eb)
    if stage == "upsampler":
        return upsampler(cfg, b, eb)
    if stage == "image_to_triplane":
        return image_to_triplane(cfg, b, eb)
    if stage == "field_query":
        return field_query(cfg, int(size["points"]), eb)
    if stage == "render_view":
        return render_view(cfg, int(size.get("resolution", 512)), size.get("samples"), int(size.get("views", 1)) * b, eb)
    if stage == "mesh_grid":
        return mesh_grid(cfg, size.get("grid"), eb)
    raise ValueError(f"unknown roofline stage {stage!r}; choose one of {STAGES}")


# ---------------------------------------------------------------------------------------------
def _fmt_flops(x: float) -> str:
    for unit, k in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if x >= k:
            return f"{x / k:.3g} {unit}"
    return f"{x:.3g} FLOP"


def _fmt_bytes(x: float) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= k:
            return f"{x / k:.3g} {unit}"
    return f"{x:.3g} B"


def _fmt_s(x: float) -> str:
    if x >= 1:
        return f"{x:.3g} s"
    if x >= 1e-3:
        return f"{x * 1e3:.3g} ms"
    return f"{x * 1e6:.3g} us"


def preset_rows(name: str, resolution: int = 512, gpu: str = "H100") -> list[tuple[str, Work]]:
    cfg = LRMConfig.preset(name)
    rows = [("encoder", encoder(cfg)), ("camera embedder", camera(cfg))]
    rows += [(f"decoder {k}", w) for k, w in decoder_parts(cfg).items()]
    rows += [("upsampler", upsampler(cfg)), ("image -> triplane", image_to_triplane(cfg)),
             ("field query, per point (planes in cache)", field_query(cfg, 1, points_from_memory=False)
              + Work(0.0, -2.0 * 3 * cfg.triplane.channels * cfg.triplane.high_res ** 2)),
             (f"render view {resolution}^2 x {cfg.render.samples_per_ray} samples", render_view(cfg, resolution)),
             ("mesh grid 256^3", mesh_grid(cfg, 256)),
             (f"mesh grid {cfg.render.mesh_resolution}^3", mesh_grid(cfg))]
    return rows


def work_table(presets=None, resolution: int = 512, gpu: str = "H100") -> str:
    lines = [f"Analytic work per stage (batch 1, bf16 bytes; 2 FLOPs per multiply-add); floor on {gpu} "
             f"= max(FLOPs / {GPUS[gpu]['bfloat16'] / 1e12:.0f} TFLOP/s, bytes / {GPUS[gpu]['bandwidth'] / 1e12:.2f} TB/s)",
             "", "| preset | stage | FLOPs | bytes | FLOP/byte | floor |", "|---|---|---:|---:|---:|---:|"]
    for name in presets or [p for p in PRESETS]:
        for stage, w in preset_rows(name, resolution, gpu):
            lines.append(f"| {name} | {stage} | {_fmt_flops(w.flops)} | {_fmt_bytes(w.bytes)} | "
                         f"{w.intensity:.0f} | {_fmt_s(w.floor_s(gpu))} |")
    return "\n".join(lines)


def gpu_kind(name: str | None) -> str | None:
    """'NVIDIA H100 80GB HBM3' -> 'H100'."""
    for k in GPUS:
        if name and re.search(k, name, re.I):
            return k
    return None


def case_work(extra: dict) -> Work | None:
    """Work of one benchmark case from its extra_info (explicit flops/bytes, or preset + roofline stage)."""
    if "flops" in extra:
        return Work(float(extra["flops"]), float(extra.get("bytes", 0.0)))
    eb = 4 if extra.get("dtype", "float32") == "float32" else 2
    size = {k: extra[k] for k in ("batch", "resolution", "samples", "views", "grid", "points") if k in extra}
    if "roofline" in extra and "preset" in extra:
        return stage_work(extra["roofline"], LRMConfig.preset(extra["preset"]), eb, **size)
    # suites that only name the stage and put the preset in the size ("base/bfloat16"): the
    # batch-1 transformer stages need nothing else
    stage = str(extra.get("stage", ""))
    if stage in ("encoder", "decoder", "upsampler", "image_to_triplane"):
        preset = extra.get("preset") or next((t for t in re.split(r"[^a-z0-9]+", str(extra.get("size", "")).lower())
                                              if t in PRESETS), None)
        if preset:
            return stage_work(stage, LRMConfig.preset(preset), eb, **size)
    return None


def achieved(result: dict, gpu: str | None = None, stat: str = "min") -> list[dict]:
    """Per timed case of a pytest-benchmark JSON: measured time vs the roofline floor."""
    mi = result.get("machine_info", {}).get("lrm_fast", {})
    gpu = gpu or gpu_kind(mi.get("gpu"))
    rows = []
    for b in result.get("benchmarks", []):
        extra, stats = b.get("extra_info", {}), b.get("stats") or {}
        w = case_work(extra)
        if w is None or not stats.get(stat) or gpu is None:
            continue
        t = float(stats[stat])
        dtype = extra.get("dtype", "float32")
        peak = GPUS[gpu].get(dtype, GPUS[gpu]["float32"])
        rows.append({"group": b.get("group"), "backend": extra.get("backend"), "dtype": dtype, "time_s": t,
                     "flops": w.flops, "bytes": w.bytes, "tflops": w.flops / t / 1e12,
                     "frac_compute": w.flops / t / peak, "frac_bandwidth": w.bytes / t / GPUS[gpu]["bandwidth"],
                     "floor_s": max(w.flops / peak, w.bytes / GPUS[gpu]["bandwidth"]), "gpu": gpu})
    return rows


def achieved_table(result: dict, gpu: str | None = None, stat: str = "min") -> str:
    rows = achieved(result, gpu, stat)
    if not rows:
        return "(no timed cases with known work on a known GPU)"
    lines = [f"Achieved fraction of {rows[0]['gpu']} peak ({stat} time; peak by dtype: bf16/fp16 tensor cores, "
             "fp32 CUDA cores)", "",
             "| case | backend | dtype | time | floor | TFLOP/s | % peak compute | % peak bandwidth |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['group']} | {r['backend']} | {r['dtype']} | {_fmt_s(r['time_s'])} | {_fmt_s(r['floor_s'])} | "
                     f"{r['tflops']:.3g} | {100 * r['frac_compute']:.1f} | {100 * r['frac_bandwidth']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lib.roofline", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", action="append", help="presets (repeatable; default all)")
    p.add_argument("--resolution", type=int, default=512, help="render view resolution (default 512)")
    p.add_argument("--gpu", choices=sorted(GPUS), default=None, help="GPU for floors (default H100, or the result file's)")
    p.add_argument("--results", help="a pytest-benchmark JSON (bench/results/*.json): achieved fractions")
    a = p.parse_args(argv)
    print(work_table(a.preset, a.resolution, a.gpu or "H100"))
    if a.results:
        with open(a.results) as f:
            result = json.load(f)
        print()
        print(achieved_table(result, a.gpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
