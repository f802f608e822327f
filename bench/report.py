"""Run the benchmark suites and report fast/reference ratios (time and peak memory) from ONE run.

    python -m bench.report                      # full CPU/GPU sizes; writes bench/results/<date>-<device>.json/.md
    python -m bench.report --smoke              # tiny sizes, timed, in seconds: checks the pipeline
    python -m bench.report --from-json r.json   # only (re)print the table of an earlier run
    python -m bench.report --fail-below 1.0     # exit 1 if any fast path is slower than its reference
    python -m bench.report --from-json new.json --baseline old.json --max-drop 0.10
                                                # exit 1 if a speedup fell by more than 10 % vs old
    python -m bench.report --from-json r.json --readme README.md   # refresh the Performance section
    python -m bench.report --readme README.md   # ... from the latest bench/results/<date>-<device>.json per device
    lrm-fast bench ...                          # the same command, from the CLI

Ratios are the claim (``speedup = reference time / fast time`` and ``memory = reference peak /
fast peak``, both > 1 when fast wins); absolute times are context that depends on the machine
(on a shared CPU, noise of +-20 % between runs is normal, which is why both sides of a ratio
come from the same run). Pairs whose "fast" path resolved to the reference itself (no fast
kernel for that device/dtype) are marked ``same path`` and never fail ``--fail-below``.

Regression checks on absolute times, same machine only, are pytest-benchmark's own::

    LRM_FAST_BENCH=full python -m pytest bench --benchmark-autosave            # stores .benchmarks/...
    LRM_FAST_BENCH=full python -m pytest bench --benchmark-compare --benchmark-compare-fail=median:10%

Parsing and formatting import nothing heavy (no torch), so ``--from-json`` is instant.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "bench", "results")
PERF_START, PERF_END = "<!-- perf:start -->", "<!-- perf:end -->"

# Published / measured anchors, for context next to our own numbers (docs/architecture.md section 6).
ANCHORS = [
    "LRM paper (Hong et al. 2023): 5 s per image on one A100 (the paper's claim).",
    "OpenLRM: 5-6 s per image on an A100; TripoSR: < 0.5 s per image on an A100 (the projects' claims).",
    "The anchors' own code on our 2-core CPU (fp32, random weights): OpenLRM base image->triplane 8.0 s, "
    "one 288x288 view 16.9 s at 8.5 GiB peak, image->mesh ~114 s (384^3 field query ~103 s); "
    "OpenLRM small 4.0 s / 4.8 s (192x192) / ~85 s; TripoSR 16.7 s / 10.0 s (256x256) / ~34 s (256^3).",
]


@dataclass
class Case:
    name: str
    stage: str
    size: str
    backend: str
    fast: bool
    device: str
    dtype: str
    time_s: float | None
    mem_mb: float | None
    rounds: int | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return (self.stage, self.size, self.device, self.dtype)


@dataclass
class Row:
    stage: str
    size: str
    device: str
    dtype: str
    backend: str
    ref: Case | None
    fast: Case

    @property
    def same_path(self) -> bool:
        return self.fast.backend == "reference"

    @property
    def speedup(self) -> float | None:
        if self.ref is None or not self.ref.time_s or not self.fast.time_s:
            return None
        return self.ref.time_s / self.fast.time_s

    @property
    def mem_ratio(self) -> float | None:
        r, f = (self.ref.mem_mb if self.ref else None), self.fast.mem_mb
        if r is None or f is None or r <= 0 or f <= 0:
            return None
        return r / f


# ---- parsing ---------------------------------------------------------------------------------
def load(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"benchmark result file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file ({e})") from None
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' key)")
    return data


def cases(result: dict, stat: str = "min") -> list[Case]:
    """Benchmarks that followed bench/conftest.py ``record()``; others are ignored."""
    out = []
    for b in result.get("benchmarks", []):
        ex = b.get("extra_info") or {}
        if "stage" not in ex or "backend" not in ex:
            continue
        stats = b.get("stats") or {}
        t = stats.get(stat)
        mem = ex.get("peak_mem_mb")
        out.append(Case(name=b.get("name", "?"), stage=str(ex["stage"]), size=str(ex.get("size", "")),
                        backend=str(ex["backend"]), fast=bool(ex.get("fast", ex["backend"] != "reference")),
                        device=str(ex.get("device", "?")), dtype=str(ex.get("dtype", "float32")),
                        time_s=float(t) if t is not None else None,
                        mem_mb=float(mem) if mem is not None and float(mem) >= 0 else None,
                        rounds=stats.get("rounds"), note=str(ex.get("note", "")), extra=ex))
    return out


def pair(cs: list[Case]) -> list[Row]:
    """Each fast case with the reference case of the same stage, size, device and dtype."""
    refs: dict[tuple, Case] = {}
    for c in cs:
        if not c.fast:
            refs.setdefault(c.key, c)
    rows = [Row(c.stage, c.size, c.device, c.dtype, c.backend, refs.get(c.key), c) for c in cs if c.fast]
    # reference cases with no fast counterpart still show up (speedup "-")
    fast_keys = {c.key for c in cs if c.fast}
    rows += [Row(c.stage, c.size, c.device, c.dtype, "-", c, c) for k, c in refs.items() if k not in fast_keys]
    return sorted(rows, key=lambda r: (r.stage, r.device, r.dtype, _size_order(r.size), r.backend))


def _size_order(size: str):
    nums = [int(x) for x in re.findall(r"\d+", size)]
    return (nums[0] if nums else 0, size)


# ---- formatting ------------------------------------------------------------------------------
def _t(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.2f} ms"
    return f"{x * 1e6:.1f} us"


def _m(x: float | None) -> str:
    return "-" if x is None else (f"{x / 1024:.2f} GiB" if x >= 1024 else f"{x:.1f} MiB")


def _r(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def machine_line(result: dict) -> str:
    mi = result.get("machine_info") or {}
    lf = mi.get("lrm_fast") or {}
    if lf.get("device") == "cuda":
        hw = f"{lf.get('gpu', 'GPU')} (driver {lf.get('driver', '?')}, CUDA {lf.get('torch_cuda', '?')})"
    else:
        cpu = (mi.get("cpu") or {}).get("brand_raw") or mi.get("processor") or "CPU"
        hw = f"{cpu}, {lf.get('cpu_count', '?')} cores ({lf.get('torch_threads', '?')} torch threads)"
    vers = ", ".join(f"{k} {lf[k]}" for k in ("torch", "triton", "xformers", "timm") if k in lf)
    when = result.get("datetime", "")[:19].replace("T", " ")
    mode = lf.get("lrm_fast_mode", "?")
    return f"{hw}; {vers}; mode {mode}; run {when} UTC".strip()


def markdown(result: dict, stat: str = "min", baseline: dict | None = None) -> str:
    rows = pair(cases(result, stat))
    base = {}
    if baseline is not None:
        base = {(r.stage, r.size, r.device, r.dtype, r.backend): r.speedup for r in pair(cases(baseline, stat))}
    lines = [f"Machine: {machine_line(result)}", "",
             f"Speedup = reference / fast {stat} time; memory = reference / fast peak (both from this one run).", ""]
    head = "| stage | size | device | dtype | fast path | reference | fast | speedup | ref peak | fast peak | memory |"
    sep = "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"
    if baseline is not None:
        head, sep = head + " baseline speedup |", sep + "---:|"
    lines += [head, sep]
    for r in rows:
        sp = "same path" if r.same_path and r.ref is not r.fast else _r(r.speedup)
        if r.ref is r.fast:
            sp = "no fast case"
        cells = [r.stage, r.size, r.device, r.dtype, r.backend, _t(r.ref.time_s if r.ref else None),
                 _t(r.fast.time_s) if r.ref is not r.fast else "-", sp,
                 _m(r.ref.mem_mb if r.ref else None), _m(r.fast.mem_mb) if r.ref is not r.fast else "-",
                 "-" if r.ref is r.fast else ("same path" if r.same_path else _r(r.mem_ratio))]
        if baseline is not None:
            cells.append(_r(base.get((r.stage, r.size, r.device, r.dtype, r.backend))))
        lines.append("| " + " | ".join(cells) + " |")
    notes = sorted({f"{r.stage}: {r.fast.note}" for r in rows if r.fast.note})
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    if not rows:
        lines.append("| (no timed cases recorded) |" + " |" * 10)
    return "\n".join(lines)


def failures(result: dict, fail_below: float | None = None, baseline: dict | None = None,
             max_drop: float | None = None, stat: str = "min") -> list[str]:
    """Human-readable reasons the run fails the thresholds (empty = pass)."""
    rows = pair(cases(result, stat))
    bad = []
    if fail_below is not None:
        for r in rows:
            if r.ref is r.fast or r.same_path:
                continue
            if r.speedup is None:
                bad.append(f"{r.stage}:{r.size} [{r.backend}] has no timing to compare (did it run?)")
            elif r.speedup < fail_below:
                bad.append(f"{r.stage}:{r.size} {r.device} {r.dtype} [{r.backend}]: speedup "
                           f"{r.speedup:.2f}x < {fail_below:.2f}x")
    if baseline is not None and max_drop is not None:
        old = {(r.stage, r.size, r.device, r.dtype, r.backend): r.speedup for r in pair(cases(baseline, stat))}
        for r in rows:
            o = old.get((r.stage, r.size, r.device, r.dtype, r.backend))
            if o and r.speedup and r.speedup < o * (1 - max_drop):
                bad.append(f"{r.stage}:{r.size} {r.device} {r.dtype} [{r.backend}]: speedup {r.speedup:.2f}x "
                           f"fell more than {100 * max_drop:.0f}% from baseline {o:.2f}x")
    return bad


# ---- files -----------------------------------------------------------------------------------
def write_atomic(path: str, text: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def strip_raw_timings(result: dict) -> dict:
    """Drop each case's per-round timings (``stats.data``: thousands of numbers for fast GPU
    cases) from a result that is kept in the repository; the statistics stay."""
    out = json.loads(json.dumps(result))
    for b in out.get("benchmarks", []):
        (b.get("stats") or {}).pop("data", None)
    return out


def result_stem(result: dict) -> str:
    """``<date>-<device>``: 2026-11-26-cpu, 2026-11-26-h100."""
    date = (result.get("datetime") or _dt.datetime.now(_dt.timezone.utc).isoformat())[:10]
    lf = (result.get("machine_info") or {}).get("lrm_fast") or {}
    dev = "cpu"
    if lf.get("device") == "cuda":
        m = re.search(r"(H100|H200|A100|L40S|L4|A10G|RTX ?\d+)", lf.get("gpu", ""), re.I)
        dev = (m.group(1) if m else "gpu").replace(" ", "").lower()
    return f"{date}-{dev}"


def full_report(result: dict, stat: str = "min", baseline: dict | None = None) -> str:
    """The .md written next to a result JSON: table, kernel paths, roofline where known."""
    lf = (result.get("machine_info") or {}).get("lrm_fast") or {}
    parts = [f"# lrm_fast benchmarks {result_stem(result)}", "", markdown(result, stat, baseline), ""]
    paths = lf.get("kernel_paths")
    if isinstance(paths, dict):
        parts += ["## Kernel paths (backend='auto')", ""]
        for where, lines in paths.items():
            parts += [f"{where}:", ""] + [f"- {x}" for x in lines] + [""]
    if lf.get("device") == "cuda":
        try:
            from bench.roofline import achieved_table

            parts += ["## Roofline", "", achieved_table(result, stat=stat), ""]
        except Exception as e:  # noqa: BLE001 - the ratio table matters more than the roofline
            parts += [f"(roofline unavailable: {type(e).__name__}: {e})", ""]
    return "\n".join(parts)


def perf_section(results: list[tuple[dict, str]], stat: str = "min") -> str:
    """README text: one table per result file (GPU first), then the anchors."""
    def gpu_first(item):
        return 0 if ((item[0].get("machine_info") or {}).get("lrm_fast") or {}).get("device") == "cuda" else 1

    parts = ["Measured by `python -m bench.report`. Ratios compare our fast path with our own reference "
             "implementation (the spec) in the same run; absolute times are for context.", ""]
    for result, source in sorted(results, key=gpu_first):
        src = f" (`{source}`)" if source else ""
        parts += [f"**{result_stem(result)}**{src}", "", markdown(result, stat), ""]
    parts += ["Anchors for context (not measured by these tables):", ""] + [f"- {a}" for a in ANCHORS]
    return "\n".join(parts)


def update_readme(readme: str, section: str) -> None:
    try:
        with open(readme) as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"README not found: {readme}") from None
    for marker in (PERF_START, PERF_END):
        if text.count(marker) != 1:
            raise ValueError(f"{readme}: needs exactly one {marker!r} marker, found {text.count(marker)}")
    a, b = text.index(PERF_START) + len(PERF_START), text.index(PERF_END)
    if b < a:
        raise ValueError(f"{readme}: {PERF_END!r} comes before {PERF_START!r}")
    write_atomic(readme, text[:a] + "\n" + section.strip() + "\n" + text[b:])


def latest_results(directory: str = RESULTS_DIR) -> list[str]:
    """The newest ``<date>-<device>.json`` per device (e.g. the latest CPU run and the latest H100 run)."""
    pat = re.compile(r"^(\d{4}-\d{2}-\d{2})-([a-z0-9]+)\.json$")
    newest: dict[str, str] = {}
    for f in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        m = pat.match(f)
        if m:
            newest[m.group(2)] = f  # sorted by date: the last one wins
    if not newest:
        raise FileNotFoundError(f"no <date>-<device>.json result files in {directory}; run `python -m bench.report` first")
    return [os.path.join(directory, f) for f in sorted(newest.values())]


# ---- running ---------------------------------------------------------------------------------
def pytest_command(json_path: str, smoke: bool, targets: list[str], k: str | None, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", *(targets or [os.path.join(ROOT, "bench")]), "-q",
           "-p", "no:cacheprovider", f"--benchmark-json={json_path}", "--benchmark-enable",
           "--benchmark-sort=name"]
    if smoke:  # timed, but as little as possible: the point is checking the pipeline
        cmd += ["--benchmark-min-rounds=1", "--benchmark-max-time=0.05", "--benchmark-warmup=off"]
    else:  # slow CPU cases take seconds each: 3 rounds; one warmup call (CUDA: autotune, cuDNN plans)
        cmd += ["--benchmark-min-rounds=3", "--benchmark-max-time=2.0", "--benchmark-warmup=on",
                "--benchmark-warmup-iterations=1"]
    if k:
        cmd += ["-k", k]
    return cmd + list(extra)


def run_suites(json_path: str, smoke: bool, targets=(), k=None, extra=(), time_budget: float | None = None) -> int:
    env = {**os.environ, "LRM_FAST_BENCH": "smoke" if smoke else "full", "HF_HUB_OFFLINE": "1"}
    if time_budget:  # bench/conftest.py skips the cases that would start after this
        import time

        env["LRM_FAST_BENCH_DEADLINE"] = str(time.time() + time_budget)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = pytest_command(json_path, smoke, list(targets), k, list(extra))
    print("+ " + " ".join(cmd), flush=True)
    import signal

    # A time limit (gpu_suite.sh: timeout -s INT) interrupts pytest, which still writes its JSON;
    # this process must survive that signal to turn the partial JSON into the report.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        return proc.wait()
    finally:
        signal.signal(signal.SIGINT, old)


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="python -m bench.report",
                                     description="Run the benchmarks; print fast/reference ratios.")
    p.add_argument("targets", nargs="*", help="benchmark files (default: all of bench/)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, minimal timing (seconds; checks the pipeline)")
    p.add_argument("-k", default=None, help="pytest -k expression to select cases")
    p.add_argument("--from-json", action="append", default=None,
                   help="do not run: report this pytest-benchmark JSON (repeatable, e.g. a CPU and a GPU run)")
    p.add_argument("--out", default=None, help="write <stem>.json/.md here (default bench/results/, "
                                                 "or nowhere with --smoke / --from-json)")
    p.add_argument("--name", default=None, help="file stem for --out (default <date>-<device>, e.g. 2026-11-26-h100)")
    p.add_argument("--stat", default="min", choices=["min", "median", "mean"],
                   help="time statistic (default min: on a shared machine noise only adds time, so the minimum is the most repeatable)")
    p.add_argument("--fail-below", type=float, default=None,
                   help="exit 1 if any fast/reference speedup is below this (pairs on the same path excepted)")
    p.add_argument("--baseline", default=None, help="an earlier result JSON to compare speedups with")
    p.add_argument("--max-drop", type=float, default=None, help="with --baseline: exit 1 if a speedup fell by more "
                                                                  "than this fraction (e.g. 0.1)")
    p.add_argument("--readme", default=None, help=f"replace the text between {PERF_START} and {PERF_END} "
                                                   "in this file with the table")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds: cases that would start later are skipped (the run still writes its results)")
    p.add_argument("--pytest-arg", action="append", default=[], help="extra pytest argument (repeatable)")
    return p


def run(args) -> int:
    results: list[tuple[dict, str]] = []
    if args.from_json:
        results = [(load(p), p) for p in args.from_json]
    elif args.readme and not args.targets and not args.smoke and args.out is None and args.k is None:
        # README refresh alone: the latest committed results, one per device
        results = [(load(p), os.path.relpath(p, ROOT)) for p in latest_results()]
    else:
        fd, tmp = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        try:
            rc = run_suites(tmp, args.smoke, args.targets, args.k, args.pytest_arg, args.time_budget)
            if os.path.getsize(tmp) == 0:
                raise RuntimeError(f"the benchmark run wrote no results (pytest exit code {rc})")
            result = load(tmp)
        finally:
            os.unlink(tmp)
        if rc != 0:
            print(f"warning: pytest exited with {rc}; the table shows the cases that ran", file=sys.stderr)
        src = ""
        out_dir = args.out or (None if args.smoke else RESULTS_DIR)
        if out_dir:
            stem = os.path.join(out_dir, args.name or result_stem(result))
            write_atomic(stem + ".json", json.dumps(strip_raw_timings(result), indent=1))
            write_atomic(stem + ".md", full_report(result, args.stat))
            src = os.path.relpath(stem + ".json", ROOT)
            print(f"wrote {stem}.json and {stem}.md")
        results = [(result, src)]
    baseline = load(args.baseline) if args.baseline else None
    bad = []
    for result, src in results:
        if len(results) > 1:
            print(f"\n## {src}\n")
        print(markdown(result, args.stat, baseline))
        bad += failures(result, args.fail_below, baseline, args.max_drop, args.stat)
    if args.readme:
        update_readme(args.readme, perf_section(results, args.stat))
        print(f"updated the Performance section of {args.readme}")
    for b in bad:
        print("FAIL: " + b, file=sys.stderr)
    return 1 if bad else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"bench.report: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
