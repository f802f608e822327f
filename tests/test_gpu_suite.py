"""The device script cannot break unseen: ``bench/scripts/gpu_suite.sh --dry-run`` runs end to end on this
CPU at tiny sizes (GPU-only steps skipped), and its table driver ``bench/scripts/device_table.py`` keeps
going past a failing or slow row, writing every finished row at once."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from bench.lib.mem import PeakMemory
from bench.scripts import device_table as dt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _table_lines(md: str) -> list[list[str]]:
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in md.splitlines() if ln.startswith("| ")]
    return [c for c in cells if c[0] not in ("case", "step")]


def test_gpu_suite_dry_run_end_to_end(tmp_path):
    """The whole script on CPU (two cases, fp32, the first deliberately failing): every step runs or says
    why not, the table has its rows and numbers, the failing case did not stop the ones after it."""
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable,
               SUITE_GPU_TESTS="tests/test_launches.py",
               SUITE_TABLE_ARGS="--cases view,image_to_triplane/base --impls fast,reference,openlrm --dtypes float32 "
                                "--fail-case view")
    env.pop("SUITE_ONLY", None)
    r = subprocess.run(["bash", os.path.join(ROOT, "bench", "scripts", "gpu_suite.sh"), "--dry-run"], env=env,
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    files = sorted(os.listdir(tmp_path))
    stem = next(f for f in files if f.endswith("-suite.md"))[:-len("-suite.md")]
    assert stem.endswith("-dryrun"), files
    for suffix in ("-suite.log", "-suite.md", "-gpu-tests.xml", "-table.jsonl", "-table.md", "-measurements.md",
                   "-roofline.md"):
        assert stem + suffix in files, (suffix, files)
    steps = {ln[0]: ln[1] for ln in _table_lines((tmp_path / f"{stem}-suite.md").read_text())}
    gpu_only = [k for k in steps if k.startswith(("build", "Triton field", "kernel benchmarks"))]
    assert len(gpu_only) == 3 and all(steps[k] == "skipped (dry run: no GPU)" for k in gpu_only), steps
    assert all(v == "ok" for k, v in steps.items() if k not in gpu_only), steps
    order = [k.split()[0] for k in steps]
    assert order == ["build", "check", "Triton", "gpu", "device", "kernel", "roofline", "kernel"], order

    rows = [json.loads(ln) for ln in (tmp_path / f"{stem}-table.jsonl").read_text().splitlines()]
    got = {(r["case"], r["impl"]): r for r in rows}
    assert len(rows) == 6 and len(got) == 6
    for impl in ("fast", "reference"):
        r = got[("image_to_triplane/base", impl)]
        assert r["status"] == "ok" and r["ms"] > 0 and r["ops"] > 0 and r["syncs"] >= 0 and r["reps"] >= 1, r
        assert got[("view", impl)]["status"] == "error" and "deliberate" in got[("view", impl)]["error"]
    assert got[("image_to_triplane/base", "openlrm")]["status"] == "n/a"
    md = (tmp_path / f"{stem}-table.md").read_text()
    assert "| case | size | implementation | bf16 ms | bf16 peak MiB | bf16 ops / syncs | fp32 ms |" in md
    lines = {(ln[0], ln[2]): ln for ln in _table_lines(md)}
    assert lines[("view", "fast")][6] == "**error**"
    fast = lines[("image_to_triplane/base", "fast")]
    assert float(fast[6].split()[0]) > 0 and "x)" in fast[6] and int(fast[8].split(" / ")[0]) > 0, fast


def test_table_real_rows_train_step_and_compile(tmp_path):
    """The driver in process on the real code at tiny sizes: the training step (Trainer on synthetic data)
    and torch.compile of the reference (backend eager in --tiny; for the step, ``TrainConfig.compile``'s
    forward) give numbers."""
    assert dt.main(["--tiny", "--out", str(tmp_path), "--stem", "r", "--cases", "train_step,image_to_triplane/triposr",
                    "--impls", "fast,reference,compile", "--dtypes", "float32"]) == 0
    got = {(r["case"], r["impl"]): r for r in dt.read_rows(str(tmp_path / "r.jsonl"))}
    for key in (("train_step", "fast"), ("train_step", "reference"), ("train_step", "compile"),
                ("image_to_triplane/triposr", "compile")):
        r = got[key]
        assert r["status"] == "ok" and r["ms"] > 0 and r["ops"] > 0 and r["peak_mb"] is not None, r
    # the GPU issue's rule: no host sync in a training step (stats are read only at log steps); the fast
    # row on a CPU compacts missed rays (a sync per item, the CPU's choice: renderer.py ``_compacts``)
    assert got[("train_step", "reference")]["syncs"] == 0


def test_table_rows_survive_errors_and_time_limits(tmp_path, monkeypatch):
    """In process: a row that raises and a row past its time limit are recorded, the next rows run, and
    the JSONL + table are on disk after every row; --resume skips what is there."""
    calls = []

    def fake_build(ctx, case, impl, dtype):
        calls.append((case, impl))
        if impl == "reference" and case == "view":
            raise ValueError("boom\nsecond line")
        if impl == "reference" and case == "mesh":
            return (lambda: time.sleep(60)), ""
        return (lambda: torch.ones(3).sum()), "a note"

    monkeypatch.setattr(dt, "build", fake_build)
    args = ["--tiny", "--out", str(tmp_path), "--stem", "t", "--cases", "view,mesh", "--impls", "fast,reference",
            "--dtypes", "float32", "--limit", "4"]
    assert dt.main(args) == 0
    rows = dt.read_rows(str(tmp_path / "t.jsonl"))
    st = {(r["case"], r["impl"]): r["status"] for r in rows}
    assert st == {("view", "fast"): "ok", ("view", "reference"): "error", ("mesh", "fast"): "ok",
                  ("mesh", "reference"): "timeout"}, st
    err = next(r["error"] for r in rows if r["status"] == "error")
    assert err == "ValueError: boom second line"
    assert next(r for r in rows if r["status"] == "ok")["ops"] >= 1
    md = (tmp_path / "t.md").read_text()
    assert "**timeout**" in md and "**error**" in md and "ValueError: boom second line" in md
    # resume: nothing left to do, nothing rebuilt
    calls.clear()
    assert dt.main(args + ["--resume"]) == 0 and calls == []
    assert len(dt.read_rows(str(tmp_path / "t.jsonl"))) == 4


def test_table_markdown_and_value_order():
    rows = [dict(case="view", size="s", impl=i, dtype=d, status="ok", ms=ms, peak_mb=12.0, ops=10, syncs=1,
                 note="", error="") for i, d, ms in (("reference", "float32", 8.0), ("fast", "float32", 2.0),
                                                       ("fast", "bfloat16", 1.0))]
    md = dt.markdown(rows, "# t")
    line = next(ln for ln in md.splitlines() if ln.startswith("| view | s | fast |"))
    assert "| 1 |" in line and "| 2 (4.00x) | 12 | 10 / 1 |" in line, line
    order = dt.plan(["view", "mesh"], dt.IMPLS, dt.DTYPES)
    assert [i for _, i, _ in order[:8]] == ["fast", "reference"] * 4
    assert order[-1][1] == "compile" and {i for _, i, _ in order[8:16]} == {"openlrm", "triposr"}
    with pytest.raises(SystemExit):
        dt.main(["--cases", "nope"])


def test_peak_memory_in_process():
    with PeakMemory("cpu") as m:
        x = torch.ones(16 * 2**20 // 4)   # 16 MiB, touched
        del x
    if m.mb < 0:
        pytest.skip("no /proc/self/clear_refs here")
    assert 14 <= m.mb < 200, m.mb


def test_gpu_suite_arguments():
    script = os.path.join(ROOT, "bench", "scripts", "gpu_suite.sh")
    r = subprocess.run(["bash", script, "--bogus"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "--bogus" in r.stderr
    r = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0 and "--dry-run" in r.stdout and r.stdout.rstrip().endswith("kernel benchmarks).")
