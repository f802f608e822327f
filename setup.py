"""Build and install lrm_fast.

Why ``pip install --no-build-isolation``: the C++/CUDA extension ``lrm_fast._C`` compiles against
the *installed* torch. With build isolation pip would install a second, possibly different torch
into a throw-away build environment on every install (minutes, several GB, and an ABI mismatch
when the versions differ). So torch is installed first (requirements.txt) and this script imports
it. Without torch importable, or without sources in csrc/, the package installs pure-Python and
every op falls back to its reference implementation.

Extension: ``CppExtension`` (CPU kernels, OpenMP) always; ``CUDAExtension`` (adds csrc/*.cu) when
nvcc is found and a GPU is visible or ``FORCE_CUDA=1`` (honours ``TORCH_CUDA_ARCH_LIST`` and
``CUDA_HOME``). ``LRM_FAST_NO_EXT=1`` skips the extension entirely. No ``--use_fast_math``: the
ray-box and sampling kernels must round like the torch twins (a first sample lies exactly on the
box face, and the renderer's in-box test flips with its last bit).
"""
import glob
import os

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


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
        print("lrm_fast: torch not importable at build time; installing without lrm_fast._C")
        return [], {}
    cu = sorted(glob.glob(os.path.join("csrc", "*.cu")))
    want_cuda = bool(cu) and CUDA_HOME is not None and (
        torch.cuda.is_available() or os.environ.get("FORCE_CUDA") == "1")
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


ext_modules, cmdclass = _extensions()

setup(
    name="lrm_fast",
    version="0.1.0",
    description="Fast single-image 3D reconstruction with the Large Reconstruction Model (LRM)",
    long_description=open(os.path.join(ROOT, "README.md")).read() if os.path.exists(os.path.join(ROOT, "README.md")) else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["lrm_fast", "lrm_fast.*"]) + ["lrm_fast.kernels"],
    package_dir={"lrm_fast.kernels": "kernels"},
    package_data={"lrm_fast": ["assets/*"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.4", "timm>=1.0", "safetensors", "numpy", "pillow", "imageio", "imageio-ffmpeg",
        "trimesh", "scikit-image", "tqdm", "pyyaml",
    ],
    extras_require={
        "fast": ["triton", "xformers"],
        "train": ["lpips", "torchvision"],
        "dev": ["pytest", "pytest-benchmark", "ninja", "triton", "lpips", "torchvision"],
    },
    entry_points={"console_scripts": ["lrm-fast = lrm_fast.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
