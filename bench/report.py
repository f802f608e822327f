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

After the timings (not with ``--from-json``) it prints the launch and sync budget: the ops and host
syncs of one exact render, one skipping render and one training step on the path a CUDA device takes,
counted on any device, for 1 vs 8 batch items and a small vs a large view
(``bench/lib/launches.py``; ``--no-launches`` skips it), so a renderer or trainer change that adds a
per-item loop or a sync shows in the report.

Ratios are the claim (``speedup = reference time / fast time`` and ``memory = reference peak /
fast peak``, both > 1 when fast wins); absolute times are context that depends on the machine
(on a shared CPU, noise of +-20 % between runs is normal, which is why both sides of a ratio
come from the same run). Pairs whose "fast" path resolved to the reference itself (no fast
kernel for that device/dtype) are marked ``same path`` and never fail ``--fail-below``.

Regression checks on absolute times, same machine only, are pytest-benchmark's own::

    LRM_FAST_BENCH=full python -m pytest bench --benchmark-autosave            # stores .benchmarks/...
    LRM_FAST_BENCH=full python -m pytest bench --benchmark-compare --benchmark-compare-fail=median:10%

One module per job: this file is the CLI and the runner (pytest with pytest-benchmark, in a
child process); ``bench/lib/results.py`` parses a run into cases and fast/reference pairs and writes
result files; ``bench/lib/format.py`` makes the tables; ``bench/lib/gate.py`` is the regression gate
(``--fail-below``, ``--max-drop``); ``bench/lib/readme.py`` writes the README's Performance section.
Their public names stay importable from here. Parsing and formatting import nothing heavy (no
torch), so ``--from-json`` is instant.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

# the jobs live in one module each; their public names stay importable from here
from bench.lib.format import full_report, machine_line, markdown  # noqa: F401
from bench.lib.gate import failures
from bench.lib.readme import ANCHORS, PERF_END, PERF_START, latest_results, perf_section, update_readme  # noqa: F401
from bench.lib.results import (RESULTS_DIR, ROOT, Case, Row, cases, load, pair, result_stem,  # noqa: F401
                            strip_raw_timings, write_atomic)


# ---- running ---------------------------------------------------------------------------------
def pytest_command(json_path: str, smoke: bool, targets: list[str], k: str | None, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", *(targets or [os.path.join(ROOT, "bench", "suites")]), "-q",
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
    if time_budget:  # bench/suites/conftest.py skips the cases that would start after this
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
    p.add_argument("targets", nargs="*", help="benchmark files (default: all of bench/suites/)")
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
    p.add_argument("--no-launches", action="store_true",
                   help="skip the launch and sync counts (bench/lib/launches.py) after the timings")
    p.add_argument("--pytest-arg", action="append", default=[], help="extra pytest argument (repeatable)")
    return p


def run(args) -> int:
    results: list[tuple[dict, str]] = []
    launches = ""
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
        if not args.no_launches:
            from bench.lib.launches import budget_table  # torch: only when this run counts

            with tempfile.TemporaryDirectory() as tmp_dir:
                launches = budget_table(tmp_dir)
        out_dir = args.out or (None if args.smoke else RESULTS_DIR)
        if out_dir:
            stem = os.path.join(out_dir, args.name or result_stem(result))
            write_atomic(stem + ".json", json.dumps(strip_raw_timings(result), indent=1))
            write_atomic(stem + ".md", full_report(result, args.stat) + (f"\n\n{launches}\n" if launches else ""))
            src = os.path.relpath(stem + ".json", ROOT)
            print(f"wrote {stem}.json and {stem}.md")
        results = [(result, src)]
    baseline = load(args.baseline) if args.baseline else None
    bad = []
    for result, src in results:
        if len(results) > 1:
            print(f"\n## {src}\n")
        print(markdown(result, args.stat, baseline))
        if launches:
            print("\n" + launches)
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
