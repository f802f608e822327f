"""Time the anchors' own code next to lrm_fast, in the same run, same config, random weights.

    python -m bench.anchors --openlrm /path/to/OpenLRM [--preset small] [--resolution 64] [--grid 64]
    python -m bench.anchors --openlrm /tmp/OpenLRM --preset base --resolution 288 --grid 384 --repeat 1

Nothing is downloaded and nothing of theirs is copied here: the checkout given on the command line is
imported as it is, patched only in this process, at run time:

* ``torch.compile`` is replaced by the identity while their modules are imported (their
  ``forward_planes``, DINOv2 wrapper and ``OSGDecoder`` are decorated with it; compiling would
  time the compiler, and it needs a C toolchain on CPU);
* the DINOv2 backbone is built with ``pretrained=False`` (their wrapper hard-codes
  ``pretrained=True``, a download);
* ``XFORMERS_DISABLED=1`` while importing: their DINOv2 layers pick xformers whenever it imports,
  and xformers has no CPU kernel (their own fallback is plain attention, which is what a CPU runs);
* ``accelerate.logging.get_logger`` is stubbed with ``logging.getLogger`` when accelerate is not
  installed (it is their only use of accelerate in the model code).

Cases (each: median wall time of ``--repeat`` calls after one warm-up call, fp32, batch 1):
``image->triplane`` (their ``forward_planes`` vs our ``LRM.forward_planes``), ``one view`` at
``--resolution`` (their ``synthesizer`` vs our ``LRM.render``, same camera), ``mesh grid`` (their
``synthesizer.forward_grid`` vs our field queried densely on the same grid^3 points). Ratios =
their time / our time (> 1: lrm_fast is faster). ``--memory`` also measures peak RSS per case
(bench/_mem.py; a forked child, single-threaded, so it takes a while).

TripoSR (``--triposr``) is not wired up yet: its model is built from the ``config.yaml`` that
ships with the Hugging Face checkpoint, not from the code checkout; use ``--triposr-config``
pointing at that file (still no weights needed).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import statistics
import sys
import time
import types

import torch

# Our presets -> OpenLRM ModelLRM kwargs (its configs/*.yaml and model cards; see lrm_fast/config.py).
OPENLRM_ARGS = {
    "small": dict(transformer_dim=512, transformer_layers=12, transformer_heads=8, triplane_dim=32,
                  encoder_model_name="dinov2_vits14_reg", encoder_feat_dim=384, rendering_samples_per_ray=96),
    "base": dict(transformer_dim=768, transformer_layers=12, transformer_heads=12, triplane_dim=48,
                 encoder_model_name="dinov2_vitb14_reg", encoder_feat_dim=768, rendering_samples_per_ray=96),
    "large": dict(transformer_dim=1024, transformer_layers=16, transformer_heads=16, triplane_dim=80,
                  encoder_model_name="dinov2_vitb14_reg", encoder_feat_dim=768, rendering_samples_per_ray=128),
}


@contextlib.contextmanager
def _patched_import_env(checkout: str):
    """sys.path + identity torch.compile + accelerate stub, only while their modules import."""
    if not os.path.isdir(os.path.join(checkout, "openlrm")):
        raise FileNotFoundError(f"{checkout}: not an OpenLRM checkout (no openlrm/ folder)")
    saved_compile, added = torch.compile, []

    def no_compile(fn=None, *args, **kwargs):
        return fn if fn is not None else (lambda f: f)

    torch.compile = no_compile
    saved_xf = os.environ.get("XFORMERS_DISABLED")
    if not torch.cuda.is_available():
        os.environ["XFORMERS_DISABLED"] = "1"
    sys.path.insert(0, os.path.abspath(checkout))
    try:
        importlib.import_module("accelerate.logging")
    except ImportError:
        acc, acc_log = types.ModuleType("accelerate"), types.ModuleType("accelerate.logging")
        acc_log.get_logger = logging.getLogger
        acc.logging = acc_log
        sys.modules.update({"accelerate": acc, "accelerate.logging": acc_log})
        added += ["accelerate", "accelerate.logging"]
    try:
        yield
    finally:
        torch.compile = saved_compile
        if saved_xf is None:
            os.environ.pop("XFORMERS_DISABLED", None)
        sys.path.remove(os.path.abspath(checkout))


def build_openlrm(checkout: str, preset: str):
    if preset not in OPENLRM_ARGS:
        raise ValueError(f"no OpenLRM config for preset {preset!r}; choose one of {sorted(OPENLRM_ARGS)}")
    with _patched_import_env(checkout):
        modeling = importlib.import_module("openlrm.models.modeling_lrm")
        wrapper = importlib.import_module("openlrm.models.encoders.dinov2_wrapper")
        original = wrapper.Dinov2Wrapper._build_dinov2

        def build_random(model_name, modulation_dim=None, pretrained=True):
            return original(model_name, modulation_dim=modulation_dim, pretrained=False)

        wrapper.Dinov2Wrapper._build_dinov2 = staticmethod(build_random)
        try:
            torch.manual_seed(0)
            model = modeling.ModelLRM(camera_embed_dim=1024, triplane_low_res=32, triplane_high_res=64,
                                      encoder_freeze=False, encoder_type="dinov2", **OPENLRM_ARGS[preset])
        finally:
            wrapper.Dinov2Wrapper._build_dinov2 = staticmethod(original)
    return model.eval()


def _time(fn, repeat: int) -> float:
    with torch.inference_mode():
        fn()  # warm-up (allocator, lazy init)
        ts = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _grid_points(grid: int) -> torch.Tensor:
    ax = torch.linspace(-1, 1, grid)
    return torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(1, -1, 3)


def compare_openlrm(checkout: str, preset: str, resolution: int, grid: int, repeat: int, backend: str,
                    memory: bool) -> list[dict]:
    from bench._mem import peak_memory_mb
    from lrm_fast.config import LRMConfig
    from lrm_fast.model.camera import default_intrinsics, orbit_cameras
    from lrm_fast.model.lrm import LRM

    theirs = build_openlrm(checkout, preset)
    torch.manual_seed(0)
    ours = LRM(LRMConfig.preset(preset), backend=backend).eval()
    S = ours.cfg.encoder.image_size
    image = torch.rand(1, 3, S, S)
    source = ours.default_source_camera(1)
    c2w = orbit_cameras([30.0], 20.0)[None]                        # [1, 1, 4, 4], OpenGL c2w (same as theirs)
    K = default_intrinsics().expand(1, 1, 4)
    fx, fy, cx, cy = K[0, 0].tolist()
    std_cam = torch.cat([c2w.reshape(1, 1, 16),
                         torch.tensor([fx, 0, cx, 0, fy, cy, 0, 0, 1.0]).reshape(1, 1, 9)], -1)
    with torch.inference_mode():
        planes_t = theirs.forward_planes(image, source)
        planes_o = ours.forward_planes(image, source)
    pts = _grid_points(grid)

    def our_grid():
        for s in range(0, pts.shape[1], 2 ** 20):
            ours.field.query(planes_o, pts[:, s:s + 2 ** 20])

    cases = {
        "image->triplane": (lambda: theirs.forward_planes(image, source), lambda: ours.forward_planes(image, source)),
        f"one view {resolution}x{resolution}": (
            lambda: theirs.synthesizer(planes_t, std_cam, torch.zeros(1, 1, 2), torch.full((1, 1, 1), float(resolution)),
                                       torch.ones(1, 1, 1), resolution),
            lambda: ours.render(planes_o, c2w, K, resolution)),
        f"mesh grid {grid}^3": (lambda: theirs.synthesizer.forward_grid(planes_t, grid), our_grid),
    }
    rows = []
    for name, (t_fn, o_fn) in cases.items():
        print(f"  timing {name} ...", flush=True)
        row = {"anchor": "OpenLRM", "preset": preset, "case": name, "theirs_s": _time(t_fn, repeat),
               "ours_s": _time(o_fn, repeat), "backend": backend}
        if memory:
            with torch.inference_mode():
                row["theirs_mb"], row["ours_mb"] = peak_memory_mb(t_fn), peak_memory_mb(o_fn)
        row["ratio"] = row["theirs_s"] / row["ours_s"]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    mem = any("theirs_mb" in r for r in rows)
    lines = ["| anchor | preset | case | theirs | lrm_fast | ratio (theirs / ours) |" + (" theirs peak | our peak |" if mem else ""),
             "|---|---|---|---:|---:|---:|" + ("---:|---:|" if mem else "")]
    for r in rows:
        line = (f"| {r['anchor']} | {r['preset']} | {r['case']} | {r['theirs_s']:.3f} s | {r['ours_s']:.3f} s | "
                f"{r['ratio']:.2f}x |")
        if mem:
            line += f" {r.get('theirs_mb', -1) / 1024:.2f} GiB | {r.get('ours_mb', -1) / 1024:.2f} GiB |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.anchors", description=__doc__.split("\n\n")[0])
    p.add_argument("--openlrm", help="path to an OpenLRM checkout (github.com/3DTopia/OpenLRM)")
    p.add_argument("--triposr", help="path to a TripoSR checkout (needs --triposr-config; not wired up yet)")
    p.add_argument("--triposr-config", help="TripoSR's config.yaml from its checkpoint folder")
    p.add_argument("--preset", default="small", choices=sorted(OPENLRM_ARGS))
    p.add_argument("--resolution", type=int, default=64, help="view size (OpenLRM's demo: 288 base, 192 small)")
    p.add_argument("--grid", type=int, default=64, help="mesh grid size (OpenLRM's default: 384)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--backend", default="fast", help="lrm_fast backend (fast | reference)")
    p.add_argument("--memory", action="store_true", help="also peak memory per case (slow)")
    p.add_argument("--json", help="write the rows to this JSON file")
    a = p.parse_args(argv)
    if not a.openlrm and not a.triposr:
        p.error("give --openlrm PATH and/or --triposr PATH (local checkouts; nothing is downloaded)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    try:
        if a.openlrm:
            print(f"OpenLRM {a.preset} from {a.openlrm} vs lrm_fast ({a.backend}), torch threads "
                  f"{torch.get_num_threads()}", flush=True)
            rows += compare_openlrm(a.openlrm, a.preset, a.resolution, a.grid, a.repeat, a.backend, a.memory)
        if a.triposr:
            raise RuntimeError("TripoSR comparison is not implemented yet (see the module docstring)")
    except (FileNotFoundError, ValueError, RuntimeError, ImportError, NotImplementedError) as e:
        print(f"bench.anchors: error: {type(e).__name__}: {e}", file=sys.stderr)
        if rows:
            print(table(rows))
        return 2
    print(table(rows))
    if a.json:
        from bench.report import write_atomic

        import platform

        meta = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "args": vars(a),
                "when_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
        write_atomic(a.json, json.dumps({"meta": meta, "rows": rows}, indent=1))
        write_atomic(os.path.splitext(a.json)[0] + ".md",
                     f"# Anchors vs lrm_fast ({meta['when_utc']} UTC)\n\n{meta['cpu_count']} cores, torch "
                     f"{meta['torch']} ({meta['torch_threads']} threads), fp32, random weights, "
                     f"lrm_fast backend {a.backend!r}; `python -m bench.anchors {' '.join(argv or sys.argv[1:])}`\n\n"
                     + table(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
