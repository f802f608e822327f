"""bench/report.py on synthetic pytest-benchmark JSON, the README generator, `lrm-fast bench`, and
bench/scripts/gpu_suite.sh's syntax (its dry run: tests/test_gpu_suite.py). No benchmark is run here (the suites run in smoke mode via bench/)."""
import json
import os
import subprocess
import sys

import pytest

from bench import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _case(stage, size, backend, fast, median, mem=None, device="cpu", dtype="float32", **extra):
    ex = dict(stage=stage, size=size, backend=backend, fast=fast, device=device, dtype=dtype, mode="full", **extra)
    if mem is not None:
        ex["peak_mem_mb"] = mem
    return {"name": f"test_{stage}[{size}-{backend}]", "group": f"{stage}:{size}", "extra_info": ex,
            "stats": {"min": median, "median": median * 1.1, "mean": median * 1.2, "rounds": 3}}


def _result(benchmarks, device="cpu", gpu=None):
    lf = {"device": device, "torch": "2.14.1", "triton": "3.8.0", "xformers": "0.0.35", "timm": "1.0.31",
          "cpu_count": 2, "torch_threads": 2, "lrm_fast_mode": "full",
          "kernel_paths": {"cpu float32": ["attention: sdpa (built in)"]}}
    if gpu:
        lf.update(gpu=gpu, driver="570.1", torch_cuda="12.8")
    return {"machine_info": {"cpu": {"brand_raw": "Test CPU"}, "lrm_fast": lf},
            "datetime": "2026-11-26T15:00:00.000000+00:00", "benchmarks": benchmarks}


@pytest.fixture
def result():
    return _result([
        _case("render", "64px", "reference", False, 2.0, mem=800.0),
        _case("render", "64px", "cpp", True, 0.5, mem=100.0, note="skips empty space"),
        _case("attention", "base", "reference", False, 0.010, mem=50.0),
        _case("attention", "base", "sdpa", True, 0.020, mem=25.0),           # slower: must fail --fail-below 1
        _case("field_query", "tiny", "reference", False, 0.004),
        _case("field_query", "tiny", "reference", True, 0.0041),             # fast resolved to the reference
        _case("mesh", "64^3", "reference", False, 1.5),                     # no fast case
        {"name": "test_foreign", "group": None, "extra_info": {}, "stats": {"median": 1.0}},  # not record()ed
    ])


def test_pairs_and_ratios(result):
    rows = {(r.stage, r.backend): r for r in report.pair(report.cases(result))}
    assert rows[("render", "cpp")].speedup == pytest.approx(4.0)
    assert rows[("render", "cpp")].mem_ratio == pytest.approx(8.0)
    assert rows[("attention", "sdpa")].speedup == pytest.approx(0.5)
    assert rows[("field_query", "reference")].same_path
    assert rows[("mesh", "-")].ref is rows[("mesh", "-")].fast
    assert len(rows) == 4  # the foreign benchmark is ignored
    # --stat picks the statistic
    rows_min = {(r.stage, r.backend): r for r in report.pair(report.cases(result, "median"))}
    assert rows_min[("render", "cpp")].speedup == pytest.approx(4.0)


def test_pairs_only_same_device_and_dtype():
    res = _result([_case("a", "s", "reference", False, 1.0, dtype="float32"),
                   _case("a", "s", "triton", True, 0.5, dtype="bfloat16")])
    (row,) = [r for r in report.pair(report.cases(res)) if r.fast.fast]
    assert row.ref is None and row.speedup is None


def test_markdown_table(result):
    md = report.markdown(result)
    assert "Test CPU, 2 cores" in md and "torch 2.14.1" in md
    assert "| render | 64px | cpu | float32 | cpp | 2.00 s | 500.00 ms | 4.00x | 800.0 MiB | 100.0 MiB | 8.00x |" in md
    assert "| attention | base | cpu | float32 | sdpa | 10.00 ms | 20.00 ms | 0.50x |" in md
    assert "same path" in md and "no fast case" in md and "skips empty space" in md
    lines = [l for l in md.splitlines() if l.startswith("|")]
    assert len({l.count("|") for l in lines}) == 1  # every row has the header's column count


def test_train_steps_per_minute():
    """bench_train's cases: steps per minute (60 / time) per thread count, under the ratio table."""
    res = _result([_case("train_step", "demo-rich-b8-t1", "reference", False, 0.78, threads=1),
                   _case("train_step", "demo-rich-b8-t1", "fast", True, 0.69, threads=1),
                   _case("train_step", "demo-rich-b8-t2", "reference", False, 0.52, threads=2),
                   _case("train_step", "demo-rich-b8-t2", "fast", True, 0.40, threads=2),
                   _case("render", "64px", "reference", False, 2.0)])
    md = report.markdown(res)
    assert "Training steps per minute:" in md
    assert "| demo-rich-b8-t1 | cpu | float32 | 1 | 76.9 | 87.0 |" in md
    assert "| demo-rich-b8-t2 | cpu | float32 | 2 | 115.4 | 150.0 |" in md
    assert "Training steps per minute" not in report.markdown(_result([_case("render", "64px", "reference", False, 2.0)]))


def test_fail_below_and_baseline(result):
    bad = report.failures(result, fail_below=1.0)
    assert len(bad) == 1 and "attention:base" in bad[0] and "0.50x" in bad[0]
    assert report.failures(result, fail_below=0.4) == []
    old = json.loads(json.dumps(result))
    old["benchmarks"][1]["stats"]["min"] = 0.25  # old speedup 8x, now 4x: a 50 % drop
    bad = report.failures(result, baseline=old, max_drop=0.1)
    assert len(bad) == 1 and "render:64px" in bad[0] and "8.00x" in bad[0]
    assert report.failures(result, baseline=old, max_drop=0.6) == []
    assert "baseline speedup" in report.markdown(result, baseline=old)


def test_main_from_json_exit_codes(tmp_path, result, capsys):
    p = tmp_path / "r.json"
    p.write_text(json.dumps(result))
    assert report.main(["--from-json", str(p)]) == 0
    assert "4.00x" in capsys.readouterr().out
    assert report.main(["--from-json", str(p), "--fail-below", "1.0"]) == 1
    assert "FAIL: attention:base" in capsys.readouterr().err
    assert report.main(["--from-json", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert report.main(["--from-json", str(tmp_path / "bad.json")]) == 2
    assert "bad.json" in capsys.readouterr().err


def test_readme_section(tmp_path, result):
    p = tmp_path / "r.json"
    p.write_text(json.dumps(result))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Performance\n\n{report.PERF_START}\nold table\n{report.PERF_END}\n\nafter\n")
    assert report.main(["--from-json", str(p), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and "4.00x" in text and text.endswith("after\n")
    assert "5 s per image on one A100" in text and "< 0.5 s" in text and "OpenLRM base image->triplane 8.0 s" in text
    assert report.main(["--from-json", str(p), "--readme", str(readme)]) == 0  # idempotent
    assert readme.read_text() == text
    gpu = _result([_case("render", "512px", "reference", False, 0.03, device="cuda"),
                   _case("render", "512px", "cpp", True, 0.003, device="cuda")], device="cuda", gpu="NVIDIA H200")
    (tmp_path / "g.json").write_text(json.dumps(gpu))
    assert report.main(["--from-json", str(p), "--from-json", str(tmp_path / "g.json"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.index("2026-11-26-h200") < text.index("2026-11-26-cpu") and "10.00x" in text
    readme.write_text("# no markers\n")
    assert report.main(["--from-json", str(p), "--readme", str(readme)]) == 2


def test_latest_results_one_per_device(tmp_path):
    for name in ("2026-11-20-cpu.json", "2026-11-26-cpu.json", "2026-11-21-h100.json", "2026-11-26-cpu.md",
                 "2026-11-26-h100-suite.log", "notes.json"):
        (tmp_path / name).write_text("{}")
    got = [os.path.basename(p) for p in report.latest_results(str(tmp_path))]
    assert got == ["2026-11-21-h100.json", "2026-11-26-cpu.json"]
    with pytest.raises(FileNotFoundError):
        report.latest_results(str(tmp_path / "empty"))


def test_result_files_and_stem(tmp_path, result):
    assert report.result_stem(result) == "2026-11-26-cpu"
    gpu = _result([], device="cuda", gpu="NVIDIA H100 80GB HBM3")
    assert report.result_stem(gpu) == "2026-11-26-h100"
    md = report.full_report(result)
    assert "Kernel paths" in md and "attention: sdpa" in md
    report.write_atomic(str(tmp_path / "sub" / "x.md"), md)
    assert (tmp_path / "sub" / "x.md").read_text() == md
    assert [f for f in os.listdir(tmp_path / "sub")] == ["x.md"]  # no temp files left behind
    assert os.stat(tmp_path / "sub" / "x.md").st_mode & 0o044  # readable by others, not mkstemp's 0600
    result["benchmarks"][0]["stats"]["data"] = [1.0] * 1000
    slim = report.strip_raw_timings(result)
    assert "data" not in slim["benchmarks"][0]["stats"] and "data" in result["benchmarks"][0]["stats"]
    assert slim["benchmarks"][0]["stats"]["min"] == result["benchmarks"][0]["stats"]["min"]


def test_pytest_command_modes():
    smoke = report.pytest_command("/tmp/x.json", True, [], None, [])
    assert "--benchmark-enable" in smoke and "--benchmark-json=/tmp/x.json" in smoke
    assert "--benchmark-min-rounds=1" in smoke
    full = report.pytest_command("/tmp/x.json", False, ["bench/suites/bench_triplane_mlp.py"], "query", ["--x"])
    assert "--benchmark-min-rounds=3" in full and full[-3:] == ["-k", "query", "--x"]


def test_cli_bench_from_json(tmp_path, result, capfd, monkeypatch):
    """`lrm-fast bench ARGS` runs `python -m bench.report ARGS` of the checkout in a child process,
    from the user's folder (a relative path means what it meant); outside a checkout, one line."""
    from lrm_fast.cli import main
    from lrm_fast.commands import bench as bench_cmd

    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.json").write_text(json.dumps(result))
    assert main(["bench", "--from-json", "r.json"]) == 0
    assert "4.00x" in capfd.readouterr().out
    assert main(["bench", "--from-json", "r.json", "--fail-below", "1"]) == 1
    capfd.readouterr()
    monkeypatch.setattr(bench_cmd, "checkout", lambda: None)
    assert main(["bench", "--smoke"]) == 2
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "source checkout" in err[0] and "python -m bench.report" in err[0], err


def test_shell_scripts_parse():
    for s in ("gpu_suite.sh", "prepare_gpu_wheels.sh"):
        r = subprocess.run(["bash", "-n", os.path.join(ROOT, "bench", "scripts", s)], capture_output=True, text=True)
        assert r.returncode == 0, (s, r.stderr)


def test_cpu_peak_memory_is_order_independent():
    """bench/lib/mem.py: a case measured after a bigger one must not look smaller (heap reuse), and
    the forked child must not hang once the parent has used its OpenMP pool."""
    import torch

    from bench.lib.mem import peak_memory_mb

    def case(n):
        return lambda: (torch.randn(n, 64) @ torch.randn(64, 256)).sum()

    first = peak_memory_mb(case(50_000))
    if first < 0:
        pytest.skip("no /proc/self/clear_refs here")
    case(400_000)()          # uses the thread pool and leaves freed heap behind
    again = peak_memory_mb(case(50_000))
    expected = 50_000 * (64 + 256) * 4 / 2**20
    assert again > 0.8 * expected and first > 0.8 * expected, (first, again, expected)


def test_benchmark_fixture_timer_hook_exists():
    """bench/suites/conftest.py swaps pytest-benchmark's private ``_timer`` for a CUDA-synchronizing clock;
    fail loudly here if a pytest-benchmark upgrade renames it (GPU times would silently be wrong)."""
    import inspect

    from pytest_benchmark.fixture import BenchmarkFixture

    assert "self._timer" in inspect.getsource(BenchmarkFixture)


@pytest.mark.gpu
def test_gpu_timings_include_kernel_time(tmp_path):
    """A case that only launches a ~10 ms GPU sleep must be timed at >= 5 ms (synchronizing clock)."""
    src = ("import torch\nfrom bench.suites.conftest import record\n\n"
           "def test_sleep(benchmark):\n"
           "    benchmark.pedantic(lambda: torch.cuda._sleep(int(2e7)), rounds=3, iterations=1)\n"
           "    record(benchmark, 'sleep', 'x', 'reference', False)\n")
    path = os.path.join(ROOT, "bench", "suites", f"bench_tmp_sync_{os.getpid()}.py")
    with open(path, "w") as f:
        f.write(src)
    try:
        out = tmp_path / "r.json"
        r = subprocess.run([sys.executable, "-m", "pytest", path, "-q", "-p", "no:cacheprovider",
                            "--benchmark-enable", f"--benchmark-json={out}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        (case,) = report.cases(report.load(str(out)), "min")
        assert case.time_s >= 5e-3, case.time_s
    finally:
        os.unlink(path)


def test_time_budget_skips_remaining_cases():
    env = {**os.environ, "LRM_FAST_BENCH_DEADLINE": "0", "LRM_FAST_BENCH": "smoke"}
    r = subprocess.run([sys.executable, "-m", "pytest", os.path.join(ROOT, "bench", "suites", "bench_triplane_mlp.py"), "-q",
                        "-p", "no:cacheprovider", "-rs"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "time budget used up" in r.stdout and " passed" not in r.stdout, r.stdout


def test_measure_gpu_uses_the_op_module_not_the_reexported_function():
    # the first GPU run lost every Triton measurement: `from lrm_fast.ops import triplane_mlp` is the
    # function that lrm_fast.ops re-exports, not the module holding triplane_mlp and _launch_cfg
    from bench.scripts import measure_gpu
    T = measure_gpu.triplane_mlp_module()
    assert callable(T.triplane_mlp) and callable(T._launch_cfg)


def test_interrupted_benchmark_keeps_the_finished_cases(tmp_path):
    # a time limit's SIGINT inside a case left it with no rounds; pytest-benchmark then failed on
    # min([]) and wrote no JSON at all (first GPU run). bench/suites/conftest.py drops such cases first.
    import json
    import subprocess
    import sys
    (tmp_path / "conftest.py").write_text("from bench.suites.conftest import pytest_sessionfinish  # noqa: F401\n")
    (tmp_path / "test_b.py").write_text(
        "def test_a(benchmark):\n    benchmark(lambda: sum(range(10)))\n\n"
        "def test_b(benchmark):\n    def stop():\n        raise KeyboardInterrupt\n    benchmark(stop)\n")
    out = tmp_path / "out.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path),
                        f"--benchmark-json={out}", "--benchmark-max-time=0.01"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.exists(), r.stdout[-2000:] + r.stderr[-2000:]
    names = [b["name"] for b in json.loads(out.read_text())["benchmarks"]]
    assert names == ["test_a"]
