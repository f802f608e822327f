"""The README's main job and ``info`` run end to end in a subprocess."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lrm_fast.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)


def test_reconstruct_default_sample(tmp_path):
    r = _cli("reconstruct", "--out", str(tmp_path), "--views", "4", "--resolution", "16")
    assert r.returncode == 0, r.stderr
    assert "UNTRAINED" in r.stderr or "untrained" in r.stderr.lower() or "model card" in r.stdout.lower()
    files = os.listdir(tmp_path / "sample")
    assert any(f.endswith((".mp4", ".gif")) for f in files), files
    assert sum(f.endswith(".png") for f in files) == 4


def test_bad_image_is_one_line_error(tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    r = _cli("reconstruct", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "not_an_image.png" in r.stderr and "Traceback" not in r.stderr


def test_info_lists_presets():
    r = _cli("info")
    assert r.returncode == 0, r.stderr
    for name in ("tiny", "small", "base", "large", "paper"):
        assert name in r.stdout
    assert "attention:" in r.stdout
