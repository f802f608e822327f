"""Build and install lrm_fast.

Why ``pip install --no-build-isolation``: the C++/CUDA extension ``lrm_fast._C`` compiles against
the *installed* torch. With build isolation pip would install a second, possibly different torch
into a throw-away build environment on every install (minutes, several GB, and an ABI mismatch
when the versions differ). So torch is installed first (requirements.txt) and this script imports
it. Without torch importable, or without sources in csrc/, the package installs pure-Python and
every op falls back to its reference implementation.

Extension: ``CppExtension`` (CPU kernels, OpenMP) always; ``CUDAExtension`` (adds csrc/*.cu) when
nvcc is found and a GPU is visible or ``FORCE_CUDA=1`` (honours ``TORCH_CUDA_ARCH_LIST`` and
``CUDA_HOME``). With ``FORCE_CUDA=1`` a build that cannot include the CUDA kernels (no toolkit, a CPU
torch, nvcc's major version != ``torch.version.cuda``'s) stops with the reason instead of coming out CPU-only. ``LRM_FAST_NO_EXT=1`` skips the extension entirely. No ``--use_fast_math``: the
ray-box and sampling kernels must round like the torch twins (a first sample lies exactly on the
box face, and the renderer's in-box test flips with its last bit).
"""
import glob
import os
import re
import subprocess

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def nvcc_version(cuda_home):
    """(major, minor) of ``cuda_home/bin/nvcc``, or None when it is missing or does not run."""
    if not cuda_home:
        return None
    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def cuda_build_decision(force_cuda, have_cu, cuda_home, torch_cuda, cuda_available, nvcc):
    """Whether to build the CUDA kernels: (want_cuda, error). A pure function (tests run it alone).

    force_cuda: FORCE_CUDA=1 was set; have_cu: csrc/*.cu exist; cuda_home: torch's CUDA_HOME (or None);
    torch_cuda: ``torch.version.cuda`` (None for a CPU torch); cuda_available: a GPU is visible;
    nvcc: ``nvcc_version(cuda_home)``. ``error`` is set when CUDA was asked for (FORCE_CUDA=1) and
    cannot be built: the build must fail loudly instead of coming out CPU-only. Without FORCE_CUDA a
    missing or mismatched toolkit builds the CPU extension, with a printed reason."""
    if not have_cu:
        return False, None
    why = None
    if torch_cuda is None:
        why = "this torch has no CUDA (torch.version.cuda is None)"
    elif not cuda_home:
        why = "no CUDA toolkit found (set CUDA_HOME to the directory holding bin/nvcc)"
    elif nvcc is None:
        why = f"{os.path.join(cuda_home, 'bin', 'nvcc')} is missing or does not run (CUDA_HOME={cuda_home})"
    elif str(nvcc[0]) != str(torch_cuda).split(".")[0]:
        why = (f"nvcc {nvcc[0]}.{nvcc[1]} in {cuda_home} does not match torch's CUDA {torch_cuda} "
               f"(the major versions must agree; point CUDA_HOME at a CUDA {str(torch_cuda).split('.')[0]}.x toolkit)")
    if why is None:
        if force_cuda or cuda_available:
            return True, None
        return False, None
    if force_cuda:
        return False, f"FORCE_CUDA=1 but the CUDA kernels cannot be built: {why}"
    if cuda_available:
        print(f"lrm_fast: building without CUDA kernels: {why}")
    return False, None


def _extensions():
    if os.environ.get("LRM_FAST_NO_EXT") == "1":
        return [], {}
    cpp = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    if not cpp:
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        if os.environ.get("FORCE_CUDA") == "1":
            raise SystemExit("lrm_fast: FORCE_CUDA=1 but torch is not importable at build time "
                             "(install torch first and build with pip --no-build-isolation)")
        print("lrm_fast: torch not importable at build time; installing without lrm_fast._C")
        return [], {}
    cu = sorted(glob.glob(os.path.join("csrc", "*.cu")))
    force = os.environ.get("FORCE_CUDA") == "1"
    want_cuda, err = cuda_build_decision(force, bool(cu), CUDA_HOME, torch.version.cuda,
                                         torch.cuda.is_available(), nvcc_version(CUDA_HOME) if cu else None)
    if err:
        raise SystemExit("lrm_fast: " + err)
    print(f"lrm_fast: building lrm_fast._C with {'CPU + CUDA' if want_cuda else 'CPU only'} kernels")
    # -ffp-contract=off: no FMA contraction, so kernels round like the torch twins (see csrc)
    cxx = ["-O3", "-fopenmp", "-ffp-contract=off"]
    define = []
    if want_cuda:
        define.append(("LRM_FAST_WITH_CUDA", None))
        ext = CUDAExtension("lrm_fast._C", cpp + cu, define_macros=define,
                            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
                            extra_link_args=["-fopenmp"])
    else:
        ext = CppExtension("lrm_fast._C", cpp, define_macros=define,
                           extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


def read_version():
    """``__version__`` from lrm_fast/_version.py (the single source; read as text, nothing imported)."""
    with open(os.path.join(ROOT, "lrm_fast", "_version.py")) as f:
        m = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if not m:
        raise SystemExit("lrm_fast: no __version__ = \"...\" line in lrm_fast/_version.py")
    return m.group(1)


ext_modules, cmdclass = _extensions()
TRAIN = ["lpips", "torchvision", "matplotlib"]
DEMO = ["gradio>=6.31,<7"]

setup(
    name="lrm_fast",
    version=read_version(),
    description="Fast single-image 3D reconstruction with the Large Reconstruction Model (LRM)",
    long_description=open(os.path.join(ROOT, "README.md")).read() if os.path.exists(os.path.join(ROOT, "README.md")) else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["lrm_fast", "lrm_fast.*"]) + ["lrm_fast.kernels"],
    package_dir={"lrm_fast.kernels": "kernels"},
    package_data={"lrm_fast": ["assets/*.png", "assets/demo/*"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.4", "timm>=1.0", "safetensors", "numpy", "pillow", "imageio", "imageio-ffmpeg",
        "trimesh", "scikit-image", "scipy", "tqdm", "pyyaml",  # scipy: the built-in background cut-out
        "xatlas", "fast-simplification",  # textured meshes (--texture / --faces), lazily imported
    ],
    # A plain install is what the API and `lrm-fast reconstruct` need; the rest is opt-in.
    extras_require={
        "fast": ["triton", "xformers"],                     # GPU kernels (the ops fall back without them)
        "train": TRAIN,                                     # perceptual loss, training curves
        "demo": DEMO,                                       # `lrm-fast demo` (web UI)
        # tests + benchmarks (CI installs this; the web demo's browser test needs the demo stack)
        "dev": ["pytest", "pytest-random-order", "pytest-benchmark", "ninja", "triton", "gradio_client", "selenium"] + TRAIN + DEMO,
    },
    entry_points={"console_scripts": ["lrm-fast = lrm_fast.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
