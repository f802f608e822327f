"""Compile-only check of csrc/*.cu with nvcc (no GPU needed), so CUDA code that does not compile
fails CI on a CPU machine. Skipped cleanly when nvcc is not found. Object files go to a temp dir.

Runs nvcc exactly as torch.utils.cpp_extension would for one architecture (sm_90 by default;
``LRM_FAST_CUDA_ARCH=80`` to change), with the installed torch's include paths.
"""
import glob
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "csrc", "*.cu")))


def _cuda_home():
    """The toolkit root: $CUDA_HOME, else asked from nvcc itself (the `nvcc` on PATH may be a
    wrapper script, so its parent folder is not the toolkit)."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return home
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # a dry run prints the toolkit root as TOP=
        src = os.path.join(tmp, "probe.cu")
        open(src, "w").close()
        try:
            out = subprocess.run([nvcc, "--dryrun", "-c", src, "-o", os.path.join(tmp, "probe.o")],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
    for line in (out.stdout + out.stderr).splitlines():
        if "TOP=" in line:
            return os.path.normpath(line.split("TOP=", 1)[1].strip())
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def _nvcc():
    home = _cuda_home()
    return os.path.join(home, "bin", "nvcc") if home else None


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found (set CUDA_HOME or put nvcc on PATH)")
@pytest.mark.skipif(not SOURCES, reason="no csrc/*.cu")
@pytest.mark.parametrize("source", SOURCES, ids=os.path.basename)
def test_cuda_source_compiles(source, tmp_path):
    os.environ.setdefault("CUDA_HOME", _cuda_home())
    import torch
    from torch.utils import cpp_extension

    try:
        includes = cpp_extension.include_paths(device_type="cuda")
    except TypeError:  # older torch: include_paths(cuda: bool)
        includes = cpp_extension.include_paths(cuda=True)
    arch = os.environ.get("LRM_FAST_CUDA_ARCH", "90")
    # the C++ standard this torch's headers need (c++17 up to ~2.9, c++20 after): ask its builder
    std = "c++20" if "-std=c++20" in open(cpp_extension.__file__).read() else "c++17"
    cmd = [_nvcc(), "-c", source, "-o", str(tmp_path / "out.o"), f"-std={std}", "-O1",
           f"-gencode=arch=compute_{arch},code=sm_{arch}", "--expt-relaxed-constexpr",
           "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
           "-DTORCH_EXTENSION_NAME=_C", "-DTORCH_API_INCLUDE_EXTENSION_H",
           f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
           "-Xcompiler", "-fPIC", f"-I{os.path.join(ROOT, 'csrc')}"]
    cmd += [f"-I{p}" for p in includes]
    cmd += ["-isystem", os.path.join(sys.base_prefix, "include", f"python{sys.version_info.major}.{sys.version_info.minor}")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"nvcc failed on {os.path.basename(source)}:\n{res.stderr[-6000:]}"


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler")
def test_math_headers_ctest(tmp_path):
    """The torch-free per-ray math (csrc/*.h) built and run as a plain C++ program (what CMake's
    ctest runs), so the shared CPU/GPU math is checked without torch."""
    cxx = shutil.which("g++") or shutil.which("c++")
    exe = str(tmp_path / "test_math")
    res = subprocess.run([cxx, "-std=c++17", "-O1", "-Wall", "-o", exe,
                          os.path.join(ROOT, "csrc", "tests", "test_math.cpp")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    run = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
