"""The device table: every stage a user runs, timed on one machine in one process, fast against the specs.

    python -m bench.scripts.device_table --out DIR            # on a GPU: the issue's sizes (~2-4 min)
    python -m bench.scripts.device_table --out DIR --tiny     # CPU, tiny sizes (< 1 min): the dry run
    python -m bench.scripts.device_table --check              # imports + the compiled kernels registered

Cases, in order of value (``CASES``): image -> triplane (``base`` and ``triposr`` presets), one 512^2
view, a 256^3 mesh, photo -> GLB (reconstruct the sample photo, mesh, write the GLB), one training
step (``configs/demo-gpu.yaml`` at batch 8). Implementations (``IMPLS``):

* ``fast``: what the product runs (``backend="auto"``; image -> triplane through ``compile_planes``,
  the CUDA-graph runner on a GPU; the mesh coarse-to-fine);
* ``reference``: the plain-PyTorch spec (``backend="reference"``; the mesh on the dense grid);
* ``compile``: ``torch.compile`` of the reference (``backend`` inductor on a GPU; ``eager`` in
  ``--tiny``, which proves the plumbing without a minute of C++ compilation on a CPU);
* ``openlrm`` / ``triposr``: the originals' own code (``bench/scripts/anchors.py`` builds them, random
  weights, their configs) where a checkout is given: ``LRM_FAST_OPENLRM`` (an OpenLRM checkout),
  ``LRM_FAST_TRIPOSR`` (+ ``LRM_FAST_TRIPOSR_SITE``: transformers 4.35, omegaconf, einops), by default
  ``.originals/OpenLRM``, ``.originals/TripoSR``, ``.originals/site-triposr`` (git-ignored, so a device
  run can carry them). Otherwise the row says "not available" and why.

Each in bf16 (autocast / the model in bf16) and fp32. Per row: the median wall time of ``--reps``
calls after one warm-up call (each call ends with ``torch.cuda.synchronize``), the peak memory of
one more call (``bench.lib.mem.PeakMemory``: CUDA allocator peak, CPU RSS high-water) and, in that
same call, the ops and host syncs it dispatched (``bench.lib.launches.LaunchCounter``).

Robust by construction, so a time limit still returns everything finished: each row is appended to
``<stem>.jsonl`` and ``<stem>.md`` (the table) is rewritten atomically after every row; each row has
a time limit (``--limit``, build + warm-up + timing); a failing row records its one-line error and
the next row runs; an error that leaves the CUDA context unusable (an illegal address) re-executes
this script, which resumes after the rows already in the JSONL. Rows run in value order: fast and
reference of every case first, then the originals, then ``torch.compile`` (minutes of compilation).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback

import torch

from bench.lib.compiled import compile_reference
from bench.lib.format import one_line
from bench.lib.launches import LaunchCounter
from bench.lib.mem import PeakMemory
from bench.lib.results import ROOT, write_atomic

CASES = ("image_to_triplane/base", "image_to_triplane/triposr", "view", "mesh", "photo_to_glb", "train_step")
IMPLS = ("fast", "reference", "compile", "openlrm", "triposr")
DTYPES = ("bfloat16", "float32")
SAMPLE = os.path.join(ROOT, "lrm_fast", "assets", "sample.png")
DEMO_RECIPE = os.path.join(ROOT, "configs", "demo-gpu.yaml")
# an error after which the CUDA context is unusable: every later CUDA call fails the same way
POISON = ("illegal memory access", "illegal address", "CUDA error", "device-side assert", "unspecified launch failure")
MAX_RESTARTS = 4
TIMED_S = 6.0   # seconds of timed calls per row, at most (at least one call)


@dataclasses.dataclass(frozen=True)
class Sizes:
    base: str            # preset of image -> triplane "base", view, mesh, photo -> GLB
    triposr: str         # preset of image -> triplane "triposr"
    view: int            # one view, view^2 pixels
    mesh: int            # mesh^3 grid (also photo -> GLB's)
    train: dict          # TrainConfig overrides on configs/demo-gpu.yaml
    reps: int
    compile_backend: str
    originals: bool      # time the originals where a checkout is given


FULL = Sizes("base", "triposr", 512, 256, dict(batch_size=8), 5, "inductor", True)
# the demo recipe's code path at test size: the tiny model, 8x8 patches of 16 px views, 8 samples per ray
TINY = Sizes("tiny", "tiny", 32, 32, dict(batch_size=2, model="tiny", model_overrides={}, render_size=16, patch=8,
                                          side_views=1, source_views=2, train_samples_per_ray=8),
               1, "eager", False)


class NotApplicable(Exception):
    """The row does not exist (its reason goes into the table)."""


class RowTimeout(Exception):
    pass


# ---- the originals --------------------------------------------------------------------------------
def _original(name: str) -> tuple[str | None, str]:
    """(checkout, '') or (None, why not)."""
    env, folder = {"openlrm": ("LRM_FAST_OPENLRM", "OpenLRM"), "triposr": ("LRM_FAST_TRIPOSR", "TripoSR")}[name]
    path = os.environ.get(env)
    if path and not os.path.isdir(path):
        return None, f"not available: {env}={path} is not a folder"
    path = path or os.path.join(ROOT, ".originals", folder)
    if not os.path.isdir(path):
        return None, f"not available: no checkout ({env} unset and no .originals/{folder})"
    return path, ""


def _triposr_site() -> str | None:
    site = os.environ.get("LRM_FAST_TRIPOSR_SITE") or os.path.join(ROOT, ".originals", "site-triposr")
    return site if os.path.isdir(site) else None


# ---- the cases: build(ctx, case, impl, dtype) -> (a no-argument callable: one call = one measured unit,
# a note for the table); NotApplicable where the row has no meaning ----------------------------------
class Ctx:
    def __init__(self, device: torch.device, sizes: Sizes, tmp: str, fail_case: str | None = None):
        self.device, self.sizes, self.tmp, self.fail_case = device, sizes, tmp, fail_case
        self.cache: dict = {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def autocast(self, dtype: torch.dtype):
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def cached(self, key, make):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def model(self, preset: str, dtype: torch.dtype, backend: str):
        """An inference model (random weights, seed 0) with its weights in ``dtype``, set to ``backend``."""
        import lrm_fast

        m = self.cached(("model", preset, dtype), lambda: lrm_fast.load_model(
            preset, device=self.device, dtype=dtype).requires_grad_(False))
        return m.set_backend(backend)

    def image(self, size: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return self.cached(("image", size), lambda: torch.rand(1, 3, size, size, generator=g).to(self.device))

    def planes(self, preset: str, dtype: torch.dtype) -> torch.Tensor:
        """The triplane of the test image (fast path); the model's backend is left as it was."""
        def make():
            m = self.model(preset, dtype, "auto")
            before = getattr(m, "backend", "auto")
            try:
                with torch.inference_mode():
                    return m.forward_planes(self.image(m.cfg.encoder.image_size).to(dtype))
            finally:
                m.set_backend(before)
        return self.cached(("planes", preset, dtype), make)

    def compiled(self, fn):
        return torch.compile(fn, backend=self.sizes.compile_backend)


def _inference(fn):
    def run():
        with torch.inference_mode():
            return fn()
    return run


def _openlrm_model(ctx: Ctx, preset: str):
    from bench.scripts.anchors import build_openlrm

    checkout, why = _original("openlrm")
    if checkout is None:
        raise NotApplicable(why)
    return ctx.cached(("openlrm", preset), lambda: build_openlrm(checkout, preset).to(ctx.device))


def _triposr_model(ctx: Ctx):
    from bench.scripts.anchors import build_triposr

    checkout, why = _original("triposr")
    if checkout is None:
        raise NotApplicable(why)

    def make():
        theirs, utils, einops = build_triposr(checkout, _triposr_site())
        return theirs.to(ctx.device), utils, einops
    return ctx.cached(("triposr",), make)


def _originals_gate(ctx: Ctx, impl: str, preset: str | None = None) -> None:
    """Raise NotApplicable unless the original ``impl`` has a row here (``preset``: the image ->
    triplane case's model; None for the cases on a triplane)."""
    if not ctx.sizes.originals:
        raise NotApplicable("not measured in --tiny: the originals run at their own (full) sizes")
    if impl == "openlrm" and preset == "triposr":
        raise NotApplicable("OpenLRM has no TripoSR model")
    if impl == "triposr" and preset not in (None, "triposr"):
        raise NotApplicable("TripoSR has one model: its row is under image_to_triplane/triposr")


def case_image_to_triplane(ctx: Ctx, impl: str, dtype: torch.dtype, preset: str):
    """``LRM.forward_planes`` at batch 1: the fast path through ``compile_planes`` (CUDA graph on a
    GPU, eager on a CPU, its own weight copy in ``dtype``), the reference under autocast."""
    m = ctx.model(preset, torch.float32, "fast" if impl == "fast" else "reference")
    image = ctx.image(m.cfg.encoder.image_size)
    if impl == "fast":
        runner = m.compile_planes(1, dtype)
        return lambda: runner(image), f"runner {runner.mode}, warm-up {runner.warmup_s:.1f} s"
    if impl == "reference":
        def run():
            with torch.no_grad(), ctx.autocast(dtype):
                return m.forward_planes(image)
        return run, ""
    if impl == "compile":
        runner, _ = compile_reference(m, "planes", dtype, backend=ctx.sizes.compile_backend)
        return (lambda: runner(image)), (f"compile_planes(mode='compile', backend={ctx.sizes.compile_backend})"
                                         f"{' + CUDA graph' if ctx.device.type == 'cuda' else ''}, "
                                         f"warm-up {runner.warmup_s:.1f} s")
    if impl == "openlrm":
        theirs = _openlrm_model(ctx, "base")
        source = m.default_source_camera(1, ctx.device)

        def run():
            with torch.no_grad(), ctx.autocast(dtype):
                return theirs.forward_planes(image, source)
        return run, "their forward_planes, our base preset's sizes"
    from bench.scripts.anchors import triposr_planes

    theirs, _, einops = _triposr_model(ctx)

    def run():
        with torch.no_grad(), ctx.autocast(dtype):
            return triposr_planes(theirs, einops, image)
    return run, "tokenizer + backbone + post-processor"


def _view_camera(ctx: Ctx, res: int):
    from bench.scripts.anchors import _openlrm_camera

    c2w, K, std_cam = _openlrm_camera(res)
    return c2w.to(ctx.device), K.to(ctx.device), std_cam.to(ctx.device)


def case_view(ctx: Ctx, impl: str, dtype: torch.dtype):
    """One view of a ``base`` reconstruction, every sample rendered (``model.render``, no occupancy grid)."""
    res = ctx.sizes.view
    if impl in ("openlrm", "triposr"):
        _originals_gate(ctx, impl)
    c2w, K, std_cam = _view_camera(ctx, res)
    if impl in ("fast", "reference", "compile"):
        m = ctx.model(ctx.sizes.base, dtype, "auto" if impl == "fast" else "reference")
        planes = ctx.planes(ctx.sizes.base, dtype)
        render = m.render
        if impl == "compile":
            render, _ = compile_reference(m, "render", backend=ctx.sizes.compile_backend)
        return _inference(lambda: render(planes, c2w, K, res)), ""
    if impl == "openlrm":
        theirs = _openlrm_model(ctx, "base")
        planes = ctx.planes(ctx.sizes.base, torch.float32)
        args = (std_cam, torch.zeros(1, 1, 2, device=ctx.device), torch.full((1, 1, 1), float(res), device=ctx.device),
                torch.ones(1, 1, 1, device=ctx.device), res)

        def run():
            with torch.inference_mode(), ctx.autocast(dtype):
                return theirs.synthesizer(planes, *args)
        return run, "their synthesizer (base: 48 + 48 samples)"
    theirs, utils, _ = _triposr_model(ctx)
    planes = ctx.planes("triposr", torch.float32)
    from lrm_fast.config import LRMConfig

    cam = LRMConfig.preset("triposr").camera
    rays = utils.get_spherical_cameras(1, 0.0, cam.source_distance, 40.0, res, res)
    rays_o, rays_d = (t.to(ctx.device) for t in rays)

    def run():
        with torch.inference_mode(), ctx.autocast(dtype):
            return theirs.renderer(theirs.decoder, planes[0], rays_o[0], rays_d[0])
    return run, "their renderer on their model's planes (128 samples, chunk 8192)"


def case_mesh(ctx: Ctx, impl: str, dtype: torch.dtype):
    """A ``mesh^3`` colored mesh of a ``base`` triplane (``lrm_fast.mesh.extract_mesh``, level "auto"):
    fast = coarse-to-fine, reference = the dense grid on the reference backend."""
    from lrm_fast.mesh import extract_mesh

    res = ctx.sizes.mesh
    if impl == "compile":
        raise NotApplicable("grid loop + marching cubes on the host: nothing for torch.compile beyond the field "
                            "(the view row)")
    if impl in ("openlrm", "triposr"):
        _originals_gate(ctx, impl)
    if impl in ("fast", "reference"):
        m = ctx.model(ctx.sizes.base, dtype, "auto" if impl == "fast" else "reference")
        planes = ctx.planes(ctx.sizes.base, dtype)
        return _inference(lambda: extract_mesh(m, planes, resolution=res, threshold="auto",
                                               coarse_to_fine=impl == "fast")), ""
    from bench.scripts.anchors import _grid_points

    if impl == "openlrm":
        theirs = _openlrm_model(ctx, "base")
        planes = ctx.planes(ctx.sizes.base, torch.float32)

        def run():
            with torch.inference_mode(), ctx.autocast(dtype):
                return theirs.synthesizer.forward_grid(planes, res)
        return run, "their forward_grid: the density grid only (no marching cubes)"
    theirs, _, _ = _triposr_model(ctx)
    planes = ctx.planes("triposr", torch.float32)
    pts = _grid_points(res)[0].to(ctx.device)

    def run():
        with torch.inference_mode(), ctx.autocast(dtype):
            return theirs.renderer.query_triplane(theirs.decoder, pts, planes[0])["density_act"]
    return run, "their query_triplane on every grid vertex: the density grid only"


def case_photo_to_glb(ctx: Ctx, impl: str, dtype: torch.dtype):
    """The sample photo -> preprocess -> triplane -> ``mesh^3`` colored mesh -> GLB file (``save_mesh``)."""
    from lrm_fast.io.export import save_mesh

    if impl == "compile":
        raise NotApplicable("a whole program with file I/O; its compiled parts are the rows above")
    if impl in ("openlrm", "triposr"):
        raise NotApplicable("their photo -> mesh programs need rembg / mcubes / hub weights; their stages are "
                            "the rows above")
    m = ctx.model(ctx.sizes.base, dtype, "auto" if impl == "fast" else "reference")
    path = os.path.join(ctx.tmp, f"out-{impl}.glb")

    def run():
        rec = m.reconstruct(SAMPLE)
        return save_mesh(rec.mesh(resolution=ctx.sizes.mesh, coarse_to_fine=impl == "fast"), path)
    return run, ""


def case_train_step(ctx: Ctx, impl: str, dtype: torch.dtype):
    """One ``Trainer.train_step`` (forward, backward, AdamW) of ``configs/demo-gpu.yaml`` at batch 8,
    on one fixed batch of synthetic data; precision bf16 (autocast) or fp32."""
    from lrm_fast.data.synthetic import make_dataset
    from lrm_fast.train.config import TrainConfig
    from lrm_fast.train.trainer import Trainer

    if impl in ("openlrm", "triposr"):
        raise NotApplicable("the originals' training code is not part of their inference checkouts")
    over = dict(ctx.sizes.train)
    root = os.path.join(ctx.tmp, "train-data")

    def make_data():
        size = over.get("render_size") or TrainConfig.load(DEMO_RECIPE).render_size
        make_dataset(root, max(4, over["batch_size"]), n_views=8, resolution=size, seed=0,
                     workers=min(8, os.cpu_count() or 1), depth=False)
        return root
    ctx.cached(("train-data",), make_data)
    cfg = TrainConfig.load(DEMO_RECIPE, dict(over, data_root=root, out_dir=os.path.join(ctx.tmp, "train-run"),
                                             num_workers=0, backend="auto" if impl == "fast" else "reference",
                                             compile=impl == "compile",
                                             precision="bf16" if dtype == torch.bfloat16 else "fp32",
                                             device=ctx.device.type, max_minutes=None, time_schedule=False,
                                             progress=False))
    tr = Trainer(cfg)
    if impl == "compile":  # TrainConfig.compile's forward, with this table's compile backend
        tr.ddp = ctx.compiled(tr.ddp._orig_mod)
    batch = next(tr.batches())
    return (lambda: tr.train_step(batch)), f"batch {cfg.batch_size}, {cfg.side_views + 1} views of {cfg.patch}^2 rays"


def build(ctx: Ctx, case: str, impl: str, dtype: torch.dtype):
    if ctx.fail_case and ctx.fail_case == case:
        raise RuntimeError(f"deliberate failure of case {case} (--fail-case)")
    if case.startswith("image_to_triplane/"):
        preset = ctx.sizes.base if case.endswith("/base") else ctx.sizes.triposr
        if impl in ("openlrm", "triposr"):
            _originals_gate(ctx, impl, case.split("/")[1])
        return case_image_to_triplane(ctx, impl, dtype, preset)
    return {"view": case_view, "mesh": case_mesh, "photo_to_glb": case_photo_to_glb,
            "train_step": case_train_step}[case](ctx, impl, dtype)


def size_label(case: str, s: Sizes) -> str:
    return {"image_to_triplane/base": f"{s.base}, batch 1", "image_to_triplane/triposr": f"{s.triposr}, batch 1",
            "view": f"{s.base}, {s.view}^2", "mesh": f"{s.base}, {s.mesh}^3", "photo_to_glb": f"{s.base}, {s.mesh}^3",
            "train_step": f"demo-gpu.yaml, batch {s.train['batch_size']}" + (", tiny" if "model" in s.train else ""),
            }[case]


# ---- measuring one row ----------------------------------------------------------------------------
@contextlib.contextmanager
def _time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise RowTimeout(f"timed out after {seconds:g} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def measure(ctx: Ctx, case: str, impl: str, dtype_name: str, limit: float) -> dict:
    dtype = getattr(torch, dtype_name)
    row = dict(case=case, size=size_label(case, ctx.sizes), impl=impl, dtype=dtype_name, device=str(ctx.device),
               status="ok", ms=None, ms_min=None, reps=0, peak_mb=None, ops=None, syncs=None, note="", error="")
    t0 = time.perf_counter()
    try:
        with _time_limit(limit):
            fn, row["note"] = build(ctx, case, impl, dtype)
            fn()                      # warm-up: allocator, lazy kernel loads, autotuning
            ctx.sync()
            ts = []
            # at most reps calls, and no new one past TIMED_S of timing or 70% of the limit (the counted
            # call comes after): a seconds-long case (photo -> GLB, a dense mesh) times fewer calls
            deadline = min(t0 + limit * 0.7, time.perf_counter() + TIMED_S)
            while len(ts) < ctx.sizes.reps and (not ts or time.perf_counter() + ts[-1] < deadline):
                t = time.perf_counter()
                fn()
                ctx.sync()
                ts.append(time.perf_counter() - t)
            row.update(ms=round(statistics.median(ts) * 1e3, 4), ms_min=round(min(ts) * 1e3, 4), reps=len(ts))
            try:                      # one more call: peak memory + what it dispatched
                with PeakMemory(ctx.device) as pm, LaunchCounter() as lc:
                    fn()
                    ctx.sync()
                row.update(ops=lc.ops, syncs=lc.syncs)
            except RowTimeout:
                raise
            except Exception as e:  # noqa: BLE001 - e.g. a compiled region that refuses a dispatch mode
                row["note"] += f"{'; ' if row['note'] else ''}ops not countable ({type(e).__name__})"
                with PeakMemory(ctx.device) as pm:
                    fn()
                    ctx.sync()
            row["peak_mb"] = round(pm.mb, 1) if pm.mb >= 0 else None
    except NotApplicable as e:
        row.update(status="n/a", note=str(e))
    except RowTimeout as e:
        row.update(status="timeout", error=str(e))
    except Exception as e:  # noqa: BLE001 - recorded; the next row runs
        row.update(status="error", error=one_line(e))
        traceback.print_exc()
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def poisoned(row: dict, device: torch.device) -> bool:
    """Is the CUDA context unusable after this row (then every later row would fail the same way)?"""
    if device.type != "cuda" or row["status"] not in ("error", "timeout"):
        return False
    if any(p in row["error"] for p in POISON):
        return True
    try:
        torch.cuda.synchronize(device)
        return False
    except Exception:  # noqa: BLE001
        return True


# ---- the table ------------------------------------------------------------------------------------
def _cell(r: dict | None, ref: dict | None) -> list[str]:
    if r is None:
        return ["", "", ""]
    if r["status"] != "ok":
        word = {"n/a": "n/a", "error": "**error**", "timeout": "**timeout**", "skipped": "skipped"}[r["status"]]
        return [word, "", ""]
    speed = ""
    if ref and ref.get("status") == "ok" and ref["ms"] and r["impl"] != "reference":
        speed = f" ({ref['ms'] / r['ms']:.2f}x)" if r["ms"] else ""
    mem = "" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}" if r["peak_mb"] >= 10 else f"{r['peak_mb']:.1f}"
    counts = "" if r["ops"] is None else f"{r['ops']} / {r['syncs']}"
    return [f"{r['ms']:.3g}{speed}", mem, counts]


def markdown(rows: list[dict], header: str) -> str:
    """One table: a line per (case, implementation), bf16 and fp32 side by side; then the notes."""
    by = {(r["case"], r["impl"], r["dtype"]): r for r in rows}
    lines = [header, "",
             "Time: median ms of the timed calls (x: the reference's time / this one's, same dtype); "
             "peak: MiB above what was allocated before the call; ops / syncs: what one call dispatched "
             "(`bench/lib/launches.py`; a CUDA-graph replay is no op: only the copies in and out count).", "",
             "| case | size | implementation | bf16 ms | bf16 peak MiB | bf16 ops / syncs | fp32 ms | fp32 peak MiB "
             "| fp32 ops / syncs |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    notes = []
    cases = [c for c in CASES if any(k[0] == c for k in by)]
    for case in cases:
        for impl in IMPLS:
            cells, size, said = [], "", {}
            for dt in DTYPES:
                r = by.get((case, impl, dt))
                size = size or (r["size"] if r else "")
                cells += _cell(r, by.get((case, "reference", dt)))
                if r and (r["error"] or r["note"]):
                    said[dt] = r["error"] or r["note"]
            if size:
                lines.append(f"| {case} | {size} | {impl} | " + " | ".join(cells) + " |")
            if len(set(said.values())) == 1 and len(said) == len([d for d in DTYPES if (case, impl, d) in by]):
                notes.append(f"- {case} / {impl}: {next(iter(said.values()))}")
            else:
                notes += [f"- {case} / {impl} / {dt}: {text}" for dt, text in said.items()]
    if notes:
        lines += ["", "Notes and errors:", ""] + notes
    return "\n".join(lines) + "\n"


def read_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plan(cases, impls, dtypes) -> list[tuple[str, str, str]]:
    """Value order: fast and reference everywhere, then the originals, then torch.compile."""
    out = []
    for group in (("fast", "reference"), ("openlrm", "triposr"), ("compile",)):
        out += [(c, i, d) for c in cases for d in dtypes for i in group if i in impls]
    return out


# ---- the import + kernel check (the suite's first step after the build) --------------------------
KERNEL_OPS = ("composite_fwd", "composite_bwd", "composite_samples_fwd", "ray_points", "generate_rays")


def check(device: torch.device) -> int:
    """Imports, the device, and ``lrm_fast._C``'s kernels registered for it (a CPU-only build fails here
    on a GPU); prints the versions and the path each op takes."""
    import lrm_fast
    import lrm_fast._C  # noqa: F401 - the compiled extension must load
    from lrm_fast.ops._ext import has_kernel

    key = "CUDA" if device.type == "cuda" else "CPU"
    try:
        import triton
        tv = triton.__version__
    except ImportError:
        if device.type == "cuda":
            raise
        tv = "not installed"
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("device_table --check: no CUDA device visible")
    print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", tv,
          torch.cuda.get_device_name() if device.type == "cuda" else "cpu")
    missing = [o for o in KERNEL_OPS if not has_kernel(o, key)]
    if missing:
        raise SystemExit(f"device_table --check: lrm_fast._C has no {key} kernels for {missing}"
                         + (" (a CPU-only build)" if key == "CUDA" else ""))
    print(f"{key} kernels registered:", ", ".join(KERNEL_OPS))
    lrm_fast.info(presets=["tiny"], device=str(device))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"), help="folder for <stem>.jsonl / .md")
    ap.add_argument("--stem", default=None, help="file stem (default <date>-<device>-table)")
    ap.add_argument("--tiny", "--dry-run", action="store_true", help="CPU, tiny sizes: the plumbing in < 1 min")
    ap.add_argument("--device", default=None, help="default: cuda if visible (cpu with --tiny)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--limit", type=float, default=None, help="seconds per row (default 90; --tiny 60)")
    ap.add_argument("--budget", type=float, default=float(os.environ["BENCH_LIMIT"]) - 10 if "BENCH_LIMIT" in os.environ
                    else None,
                    help="seconds for the whole table; later rows are recorded as skipped (default: the suite "
                         "step's limit - 10, else none)")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--resume", action="store_true", help="keep the rows already in the JSONL and skip them")
    ap.add_argument("--fail-case", default=None, help=argparse.SUPPRESS)   # the test of the error path
    ap.add_argument("--check", action="store_true", help="only the import + kernel-registration check")
    a = ap.parse_args(argv)
    device = torch.device(a.device or ("cpu" if a.tiny or not torch.cuda.is_available() else "cuda"))
    if a.check:
        return check(device)
    sizes = TINY if a.tiny else FULL
    if a.reps:
        sizes = dataclasses.replace(sizes, reps=a.reps)
    for name, got, known in (("case", a.cases, CASES), ("implementation", a.impls, IMPLS), ("dtype", a.dtypes, DTYPES)):
        bad = [x for x in got.split(",") if x not in known]
        if bad:
            ap.error(f"unknown {name} {bad}; choose from {', '.join(known)}")
    limit = a.limit or (60.0 if a.tiny else 90.0)
    t_end = time.perf_counter() + a.budget if a.budget and a.budget > 0 else float("inf")
    stem = a.stem or f"{time.strftime('%Y-%m-%d', time.gmtime())}-{'cpu' if device.type == 'cpu' else 'gpu'}-table"
    jsonl, md = os.path.join(a.out, stem + ".jsonl"), os.path.join(a.out, stem + ".md")
    os.makedirs(a.out, exist_ok=True)
    if not a.resume and os.path.exists(jsonl):
        os.remove(jsonl)
    rows = read_rows(jsonl)
    done = {(r["case"], r["impl"], r["dtype"]) for r in rows}
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    header = (f"# Device table ({gpu}, torch {torch.__version__}{', --tiny' if a.tiny else ''}; "
              f"up to {sizes.reps} timed call(s) per row, {limit:.0f} s per row)")
    torch.manual_seed(0)
    with LaunchCounter():   # its first use imports the dispatch-mode machinery (seconds): not inside a row's limit
        torch.zeros(1).add_(1)
    with tempfile.TemporaryDirectory(prefix="device-table-") as tmp:
        ctx = Ctx(device, sizes, tmp, a.fail_case)
        last_case = None
        for case, impl, dt in plan(a.cases.split(","), a.impls.split(","), a.dtypes.split(",")):
            if (case, impl, dt) in done:
                continue
            if case != last_case:   # free the last case's originals and runners; our models serve every case
                ctx.cache = {k: v for k, v in ctx.cache.items() if k[0] in ("image", "train-data", "model", "planes")}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                last_case = case
            left = t_end - time.perf_counter()
            if left < 5:
                row = dict(case=case, size=size_label(case, sizes), impl=impl, dtype=dt, device=str(device),
                           status="skipped", ms=None, ms_min=None, reps=0, peak_mb=None, ops=None, syncs=None,
                           note="skipped: the table's budget was used up", error="", seconds=0.0)
            else:
                print(f"[device_table] {case} / {impl} / {dt} ...", flush=True)
                row = measure(ctx, case, impl, dt, min(limit, left))
            rows.append(row)
            with open(jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
            write_atomic(md, markdown(rows, header))
            print(f"[device_table]   {row['status']} {row['ms'] if row['ms'] is not None else ''} ms "
                  f"{row['error'] or row['note']} ({row['seconds']} s)", flush=True)
            if poisoned(row, device):
                n = int(os.environ.get("LRM_FAST_TABLE_RESTARTS", "0"))
                if n >= MAX_RESTARTS:
                    print("[device_table] CUDA context unusable and restarts used up: stopping", flush=True)
                    return 1
                print("[device_table] CUDA context unusable: re-executing to resume after this row", flush=True)
                sys.stdout.flush()
                os.environ["LRM_FAST_TABLE_RESTARTS"] = str(n + 1)
                args = [x for x in (argv if argv is not None else sys.argv[1:]) if x != "--resume"]
                if a.budget and a.budget > 0:
                    args += ["--budget", str(max(1.0, t_end - time.perf_counter()))]
                os.execv(sys.executable, [sys.executable, "-m", "bench.scripts.device_table", *args, "--resume",
                                          "--stem", stem, "--out", a.out])
    print(markdown(rows, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
