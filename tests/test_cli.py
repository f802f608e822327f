"""The CLI end to end in subprocesses: the README's main job (no arguments), convert, render, errors."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lrm_fast.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)


def test_reconstruct_no_arguments_writes_glb_and_mp4(tmp_path):
    """`lrm-fast reconstruct` with no arguments (README): mesh + turntable video of the shipped sample."""
    r = _cli("reconstruct", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "UNTRAINED" not in r.stderr  # the default is the shipped, trained demo model
    files = os.listdir(tmp_path / "outputs" / "sample")
    assert "sample.glb" in files and ("sample.mp4" in files or "sample.gif" in files), files
    import trimesh

    assert len(trimesh.load(str(tmp_path / "outputs" / "sample" / "sample.glb"), force="mesh").faces) > 0


def test_reconstruct_formats_then_render_and_convert(tmp_path):
    r = _cli("reconstruct", os.path.join(ROOT, "lrm_fast", "assets", "sample.png"), "--out", str(tmp_path),
             "--formats", "obj,png,triplane", "--views", "3", "--resolution", "16", "--mc-resolution", "20",
             "--watertight")
    assert r.returncode == 0, r.stderr
    files = os.listdir(tmp_path / "sample")
    assert sum(f.endswith(".png") for f in files) == 4 and "sample.obj" in files  # 3 views + input
    import trimesh

    assert trimesh.load(str(tmp_path / "sample" / "sample.obj"), force="mesh").is_watertight
    tri = tmp_path / "sample" / "sample.triplane.safetensors"
    r = _cli("render", str(tri), "--out", str(tmp_path / "r"), "--azimuths", "0,45", "--resolution", "8",
             "--formats", "png,gif")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "r")) == ["sample.gif", "sample_view000.png", "sample_view001.png"]
    # convert: our own format round-trips through the CLI too
    import lrm_fast
    from lrm_fast.io.checkpoint import save_checkpoint

    save_checkpoint(lrm_fast.load_model("tiny"), str(tmp_path / "ck"))
    r = _cli("convert", str(tmp_path / "ck"), str(tmp_path / "ck2"), "--dtype", "fp16")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "ck2")) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize("args,needle", [
    (["reconstruct", "{tmp}/not_an_image.png"], "not_an_image.png"),
    (["reconstruct", "{tmp}/missing.png"], "missing.png"),
    (["reconstruct", "--model", "nosuchmodel"], "nosuchmodel"),
    (["reconstruct", "--formats", "fbx"], "fbx"),
    (["render", "{tmp}/missing.safetensors"], "missing.safetensors"),
    (["convert", "{tmp}/nope", "{tmp}/out"], "nope"),
    (["reconstruct", "--max-memory", "lots"], "--max-memory"),
    (["render", "{tmp}/missing.safetensors", "--max-memory=-1GB"], "--max-memory"),
])
def test_bad_input_is_one_line_error(tmp_path, args, needle, capsys, monkeypatch):
    """In process (cli.main is what the console script runs; subprocesses cost ~10 s of imports each)."""
    from lrm_fast.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LRM_FAST_DEBUG", raising=False)
    (tmp_path / "not_an_image.png").write_text("hello")
    code = main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


def test_help_and_info(capsys):
    from lrm_fast.cli import main

    for argv, needles in ((["--help"], ("reconstruct", "convert", "render")),
                          (["reconstruct", "--help"], ("--mc-resolution", "glb", "transparent"))):
        with pytest.raises(SystemExit) as e:
            main(argv)
        out = capsys.readouterr().out
        assert e.value.code == 0 and all(n in out for n in needles), out
    r = _cli("info")
    assert r.returncode == 0, r.stderr
    for name in ("tiny", "small", "base", "large", "paper", "triposr"):
        assert name in r.stdout
    assert "attention:" in r.stdout
    from lrm_fast.ops import _ext
    if _ext.defined("cpu_isa"):  # the one CPU instruction-set picker of the C++ kernels (csrc/cpu_isa.h)
        assert "cpu instruction set of the C++ kernels: " in r.stdout
    assert "cpu bf16: " in r.stdout


def test_cpu_bf16_detection_reads_the_cpu_flags(tmp_path):
    import importlib

    info = importlib.import_module("lrm_fast.info")   # (lrm_fast.info is also the function)
    f = tmp_path / "cpuinfo"
    for flags, want in (("fpu avx2 fma", None), ("avx2 avx512f avx512_bf16", "avx512_bf16"),
                        ("avx512_bf16 amx_tile amx_bf16", "amx_bf16")):
        f.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert info.cpu_bf16_native(str(f)) == want
    assert info.cpu_bf16_native(str(tmp_path / "missing")) is None
