"""The README install builds the C++ extension: in CI (CI=true) a missing lrm_fast._C is a failure,
not a silent skip of every C++ test."""
import os

import pytest


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="only enforced in CI (CI=true)")
def test_extension_was_built_by_the_install():
    from lrm_fast.ops.raymarch import load_extension

    ok, why = load_extension()
    assert ok, f"lrm_fast._C was not built by the README install: {why}"


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs setup.py's two decision functions alone (no setup(), no build) in a fresh interpreter.
_DECIDE = r"""
import ast, os, re, subprocess, sys
src = open(os.path.join(sys.argv[1], "setup.py")).read()
tree = ast.parse(src)
keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("nvcc_version", "cuda_build_decision")]
ns = {"os": os, "re": re, "subprocess": subprocess}
exec(compile(ast.Module(body=keep, type_ignores=[]), "setup.py", "exec"), ns)
home = os.environ.get("CUDA_HOME")
print(ns["cuda_build_decision"](os.environ.get("FORCE_CUDA") == "1", True, home, sys.argv[2] or None,
                                False, ns["nvcc_version"](home)))
"""


def _decide(tmp_path, force, cuda_home, torch_cuda):
    import subprocess
    import sys

    env = {**os.environ, "FORCE_CUDA": "1" if force else "0", "CUDA_HOME": str(cuda_home)}
    r = subprocess.run([sys.executable, "-c", _DECIDE, ROOT, torch_cuda], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _fake_nvcc(tmp_path, release):
    home = tmp_path / f"cuda-{release}"
    (home / "bin").mkdir(parents=True)
    nvcc = home / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
    nvcc.chmod(0o755)
    return home


def test_force_cuda_without_a_toolkit_fails_loudly(tmp_path):
    """FORCE_CUDA=1 with a CUDA_HOME that holds no nvcc: an error naming the path, not a CPU-only build."""
    out = _decide(tmp_path, True, tmp_path / "no-cuda-here", "13.0")
    assert out.startswith("(False, 'FORCE_CUDA=1 but") and "no-cuda-here" in out, out
    # without FORCE_CUDA (and no GPU) the CPU build goes on quietly
    assert _decide(tmp_path, False, tmp_path / "no-cuda-here", "13.0") == "(False, None)"


def test_force_cuda_checks_nvcc_major_against_torch(tmp_path):
    """A cu130 torch refuses a 12.x toolkit: FORCE_CUDA=1 stops with both versions named."""
    out = _decide(tmp_path, True, _fake_nvcc(tmp_path, "12.8"), "13.0")
    assert "nvcc 12.8" in out and "13.0" in out and out.startswith("(False, \"FORCE_CUDA=1"), out
    assert _decide(tmp_path, True, _fake_nvcc(tmp_path, "13.0"), "13.0") == "(True, None)"
    # a CPU-only torch cannot build CUDA kernels either
    assert "torch.version.cuda is None" in _decide(tmp_path, True, _fake_nvcc(tmp_path, "13.1"), "")


def test_version_has_one_source():
    """setup.py reads lrm_fast/_version.py; the package, `lrm-fast info` and the CHANGELOG agree."""
    import ast
    import re

    import lrm_fast
    from lrm_fast.info import info_text

    src = open(os.path.join(ROOT, "setup.py")).read()
    fn = [n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "read_version"]
    ns = {"os": os, "re": re, "ROOT": ROOT}
    exec(compile(ast.Module(body=fn, type_ignores=[]), "setup.py", "exec"), ns)
    assert ns["read_version"]() == lrm_fast.__version__
    assert re.search(r'version\s*=\s*read_version\(\)', src) and '"0.' not in src.split("setup(")[-1]
    assert f"## [{lrm_fast.__version__}]" in open(os.path.join(ROOT, "CHANGELOG.md")).read()
    assert f"lrm_fast {lrm_fast.__version__} " in info_text(presets=[])


def test_package_stands_alone():
    """The installed package edits no ``sys.path`` and ships no developer tools: ``lrm_fast/`` and
    ``kernels/`` (installed as ``lrm_fast.kernels``) hold only what the package runs."""
    import ast

    edits = []
    for base in ("lrm_fast", "kernels"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, base)):
            if os.path.islink(dirpath):  # a worktree's lrm_fast/kernels link: kernels/ is walked itself
                continue
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(dirpath, f)
                for node in ast.walk(ast.parse(open(path).read())):
                    if isinstance(node, ast.Attribute) and node.attr == "path" and \
                            isinstance(node.value, ast.Name) and node.value.id == "sys":
                        edits.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not edits, f"sys.path used in the package: {edits}"
    assert sorted(f for f in os.listdir(os.path.join(ROOT, "kernels")) if f.endswith(".py")) == \
        ["__init__.py", "composite.py", "triplane_mlp.py"]
