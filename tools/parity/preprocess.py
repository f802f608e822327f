"""Record what the originals' own programs make of an image FILE (the encoder input), for
tests/parity/test_preprocess.py.

    PYTHONPATH=<site-packages with omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 accelerate==0.29.3 psutil> \\
        python tools/parity/preprocess.py --triposr <TripoSR checkout at d26e331> \\
        --openlrm <OpenLRM checkout at 3108b69> --openlrm10 <OpenLRM checkout at v1.0.0> \\
        --out tests/parity/fixtures/preprocess

This script is ours; it runs the originals' code from the checkouts named on the command line and
copies none of it. It

1. writes three small PNG files (``_images``; deterministic): an RGBA object off centre with a soft
   alpha edge on a transparent background whose hidden RGB is not black, a tall RGBA object that
   touches the image's right and bottom edges (TripoSR's bounding box drops its last row and
   column) and an opaque RGB image;
2. runs TripoSR's ``run.py`` image loop (at d26e331) on each: the loop's own source text, cut out of
   ``run.py`` and executed with its ``args`` (``foreground_ratio`` 0.85, ``--no-remove-bg`` for
   the opaque file, since rembg is not run here: the RGBA files keep their alpha, so its
   ``remove_background`` never calls rembg), then ``tsr.utils.ImagePreprocessor`` at each size;
3. runs OpenLRM v1.1's ``LRMInferrer.infer_single`` (``openlrm/runners/infer/lrm.py``) on each
   file, on a stand-in ``self`` whose ``infer_planes`` keeps the image it is given (the encoder
   input) and stops there, and v1.0's ``LRMInferrer.infer`` (``lrm/inferrer.py``, the same steps)
   the same way, stopping at its ``infer_single``;
4. saves ``inputs.npz`` (``triposr_<stem>_<size>``, ``openlrm_<stem>_<size>``,
   ``openlrm10_<stem>_<size>``: float32 ``[3, S, S]``) and ``meta.json``;
5. with ``--triposr-model tests/parity/fixtures/triposr``: TripoSR's whole path from each file to
   its triplanes, ``run.py``'s loop then ``TSR.forward`` of that parity checkpoint (checking that
   the input it prepared is the recorded one), saved as ``planes-triposr.npz`` (``triposr_<stem>``:
   ``[1, 3, C, H, W]`` in TripoSR's layout). This step needs TripoSR's pinned ``transformers==4.35.0``:
   put the folder ``tools/parity/README.md`` installs for ``triposr.py`` first on ``PYTHONPATH``
   (``PYTHONPATH=/tmp/site-triposr:/tmp/site-prep``);
6. with ``--openlrm-planes``: OpenLRM v1.1's inferrer from each file to its triplanes
   (``infer_single`` with its own ``infer_planes``) on the v1.1 parity checkpoint, rebuilt by
   ``tools/parity/openlrm.py`` in a scratch folder (checked byte for byte against the fixture's),
   saved as ``planes-openlrm.npz``. Needs that generator's pins: ``PYTHONPATH=/tmp/site-openlrm11``
   (which has omegaconf added) and ``TORCH_COMPILE_DISABLE=1 XFORMERS_DISABLED=1``.

Steps 5 and 6 need different ``huggingface_hub`` versions, so they are two runs (1-4 give the same
bytes in each).

TripoSR's ``tsr/utils.py`` imports ``rembg``, OpenLRM's inferrers ``mcubes`` and v1.0's models
``transformers``, TripoSR's system ``torchmcubes``: all are stubbed when missing (never called here). The rest (torch, numpy, pillow, trimesh, imageio, tqdm) comes from
the project's environment; ``omegaconf`` and ``accelerate`` (imported at module level by both) go
in a throwaway folder:

    pip install --no-deps --target /tmp/site-prep omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 \\
        accelerate==0.29.3 psutil

The checkouts need only their code (``git archive <commit> run.py tsr``, ``... openlrm``,
``... lrm``). It takes a few seconds on a CPU and gives the same arrays on every run. Nothing is
downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import commit, stub_missing, versions  # noqa: E402

TRIPOSR_COMMIT = "d26e33181947bbbc4c6fc0f5734e1ec6c080956e"
OPENLRM_COMMIT = "3108b6902d27912e1dcdce76970eab51436f5b21"
TRIPOSR_SIZES = (48, 128)    # 48: the TripoSR parity fixture's cond_image_size
OPENLRM_SIZES = (48, 224)    # 224: the OpenLRM v1.1 parity fixture's source_size
OPENLRM10_COMMIT = "d4caebbea3f446904d9faafaf734e797fcc4ec89"  # v1.0.0
OPENLRM10_SIZES = (96,)      # the OpenLRM v1.0 parity fixture's source_size
RATIO = 0.85                 # run.py's --foreground-ratio default


def _images() -> dict[str, np.ndarray]:
    """The test files, as uint8 arrays (RGBA or RGB)."""
    out = {}
    # 96 x 64, an ellipse off centre (upper right) with a 2 px soft edge and a colour gradient; the
    # transparent pixels' RGB is red (a composite that ignores alpha would show it)
    H, W = 64, 96
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    r = np.sqrt(((x - 64.5) / 21.0) ** 2 + ((y - 22.5) / 14.0) ** 2)
    a = np.clip((1.0 - r) * 10.0, 0, 1)
    rgb = np.stack([40 + 2 * x, 220 - 3 * y, 90 + x + y], -1)
    rgb = np.where(a[..., None] > 0, rgb, [200, 30, 30])
    out["offcentre"] = np.concatenate([rgb, 255 * a[..., None]], -1).round().clip(0, 255).astype(np.uint8)
    # 40 x 88, a tall shape with a hole, binary alpha, touching the right and bottom edges
    H, W = 88, 40
    y, x = np.mgrid[0:H, 0:W]
    m = (x >= 14) & (y >= 20) & ~((x >= 22) & (x < 30) & (y >= 40) & (y < 52))
    rgb = np.stack([(x * 6) % 256, (y * 3) % 256, 255 - (x * y) % 256], -1)
    rgb = np.where(m[..., None], rgb, [10, 250, 10])
    out["tall"] = np.concatenate([rgb, 255 * m[..., None]], -1).astype(np.uint8)
    # 72 x 56, opaque RGB: a gray background with a dark square
    H, W = 56, 72
    y, x = np.mgrid[0:H, 0:W]
    sq = (abs(x - 30) < 12) & (abs(y - 30) < 10)
    rgb = np.where(sq[..., None], np.stack([30 + x, 60 + y, 90 + 0 * x], -1), [128, 128, 128])
    out["opaque"] = rgb.astype(np.uint8)
    return out


def _triposr_loop(triposr: str) -> str:
    """The source text of ``run.py``'s per-image loop (from ``for i, image_path`` to its
    ``images.append``), dedented, to be executed as it stands."""
    src = open(os.path.join(triposr, "run.py")).read().splitlines()
    start = next(i for i, s in enumerate(src) if s.startswith("for i, image_path in enumerate(args.image):"))
    end = next(i for i in range(start, len(src)) if src[i].strip() == "images.append(image)")
    return textwrap.dedent("\n".join(src[start:end + 1])) + "\n"


def record_triposr(triposr: str, files: dict[str, str]) -> dict[str, np.ndarray]:
    from PIL import Image

    sys.path.insert(0, triposr)
    from tsr.utils import ImagePreprocessor, remove_background, resize_foreground

    loop = _triposr_loop(triposr)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for stem, path in files.items():
            rgba = Image.open(path).mode == "RGBA"
            ns = dict(args=types.SimpleNamespace(image=[path], no_remove_bg=not rgba, foreground_ratio=RATIO),
                      rembg_session=None, output_dir=tmp, images=[], np=np, Image=Image, os=os,
                      remove_background=remove_background, resize_foreground=resize_foreground)
            exec(compile(loop, os.path.join(triposr, "run.py"), "exec"), ns)
            image = ns["images"][0]
            for size in TRIPOSR_SIZES:
                # TSR.forward: self.image_processor(image, self.cfg.cond_image_size) -> [1, S, S, 3]
                t = ImagePreprocessor()(image, size)[0]
                out[f"triposr_{stem}_{size}"] = t.permute(2, 0, 1).contiguous().numpy().astype(np.float32)
    return out


def record_triposr_planes(triposr: str, triposr_model: str, files: dict[str, str],
                          inputs: dict[str, np.ndarray]) -> dict:
    """TripoSR's whole ``run.py`` path, file to triplanes: its loop, then ``TSR.forward`` of the parity
    checkpoint (``tests/parity/fixtures/triposr``, loaded by ``TSR.from_pretrained``; its tokenizer's
    hub download of the ViT config pointed at the folder's ``vit/config.json``). Returns
    ``{stem: scene_codes [1, 3, C, H, W]}``; checks that the input ``TSR.forward`` prepared is the one
    recorded for that size."""
    from PIL import Image

    import tsr.models.tokenizers.image as tsr_image
    from tsr.system import TSR
    from tsr.utils import remove_background, resize_foreground

    folder = os.path.abspath(triposr_model)

    def local_hub(repo_id, filename, **kw):
        return os.path.join(folder, repo_id, filename)
    tsr_image.hf_hub_download = local_hub
    torch.use_deterministic_algorithms(True)
    model = TSR.from_pretrained(folder, config_name="config.yaml", weight_name="model.ckpt").eval()
    size = int(model.cfg.cond_image_size)
    loop = _triposr_loop(triposr)
    seen = {}
    orig = model.image_processor.__class__.__call__

    def keep(self, image, size, _seen=seen):
        _seen["input"] = orig(self, image, size)
        return _seen["input"]

    out = {}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for stem, path in files.items():
            rgba = Image.open(path).mode == "RGBA"
            ns = dict(args=types.SimpleNamespace(image=[path], no_remove_bg=not rgba, foreground_ratio=RATIO),
                      rembg_session=None, output_dir=tmp, images=[], np=np, Image=Image, os=os,
                      remove_background=remove_background, resize_foreground=resize_foreground)
            exec(compile(loop, "run.py", "exec"), ns)
            model.image_processor.__class__.__call__ = keep
            try:
                out[stem] = model(ns["images"], device="cpu").float().numpy()        # run.py: model([image])
            finally:
                model.image_processor.__class__.__call__ = orig
            got = seen["input"][0].permute(2, 0, 1).numpy()
            if not np.array_equal(got, inputs[f"triposr_{stem}_{size}"]):
                raise SystemExit(f"TSR.forward prepared another input for {stem} than the recorded one")
    return out


class _Captured(Exception):
    pass


def _openlrm_infer_single(LRMInferrer, path: str, size: int, infer_planes) -> None:
    """Run OpenLRM v1.1's ``LRMInferrer.infer_single`` on ``path`` with a stand-in ``self`` at
    ``source_size=size`` whose ``infer_planes`` is the given one (it raises ``_Captured`` once it has
    what it needs: the run stops there)."""
    me = types.SimpleNamespace(
        cfg=types.SimpleNamespace(source_size=size, render_size=16, render_views=1, render_fps=1, mesh_size=16,
                                  mesh_thres=3.0, frame_size=1, source_cam_dist=2.0),   # infer-*.yaml's 2.0
        device=torch.device("cpu"), infer_planes=infer_planes)
    try:
        LRMInferrer.infer_single(me, path, source_cam_dist=None, export_video=False, export_mesh=False,
                                 dump_video_path="", dump_mesh_path="")
    except _Captured:
        pass


def record_openlrm(openlrm: str, files: dict[str, str]) -> dict[str, np.ndarray]:
    os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")
    os.environ.setdefault("XFORMERS_DISABLED", "1")
    sys.path.insert(0, openlrm)
    from openlrm.runners.infer.lrm import LRMInferrer

    out = {}
    for stem, path in files.items():
        for size in OPENLRM_SIZES:
            got = {}

            def infer_planes(image, source_cam_dist, _got=got):
                _got["image"] = image
                raise _Captured

            _openlrm_infer_single(LRMInferrer, path, size, infer_planes)
            out[f"openlrm_{stem}_{size}"] = got["image"][0].contiguous().numpy().astype(np.float32)
    return out


def record_openlrm10(openlrm10: str, files: dict[str, str]) -> dict[str, np.ndarray]:
    """OpenLRM v1.0's ``lrm/inferrer.py`` ``LRMInferrer.infer``, on a stand-in ``self`` whose
    ``infer_single`` keeps the image it is given and stops there."""
    stub_missing(["transformers"], attrs=("ViTImageProcessor", "ViTModel"))
    sys.path.insert(0, openlrm10)
    from lrm.inferrer import LRMInferrer

    out = {}
    for stem, path in files.items():
        for size in OPENLRM10_SIZES:
            got = {}

            def infer_single(image, _got=got, **kw):
                _got["image"] = image
                raise _Captured

            me = types.SimpleNamespace(infer_kwargs={"source_size": size, "render_size": 16},
                                       device=torch.device("cpu"), infer_single=infer_single)
            try:
                LRMInferrer.infer(me, path, dump_path="", source_size=size, render_size=16, mesh_size=16,
                                  export_video=False, export_mesh=False)
            except _Captured:
                pass
            out[f"openlrm10_{stem}_{size}"] = got["image"][0].contiguous().numpy().astype(np.float32)
    return out


def record_openlrm_planes(openlrm: str, files: dict[str, str], inputs: dict[str, np.ndarray]) -> dict:
    """OpenLRM v1.1's whole inferrer path, file to triplanes: ``LRMInferrer.infer_single`` with its own
    ``infer_planes`` (``_default_source_camera``, ``model.forward_planes``) on the v1.1 parity
    checkpoint, built by ``tools/parity/openlrm.py``'s ``_build_v11`` in a scratch folder (its bytes
    checked against ``tests/parity/fixtures/openlrm-v1.1/model.safetensors``). Returns
    ``{stem: planes [1, 3, C, H, W]}``; checks that the input it prepared is the recorded one."""
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("parity_openlrm", os.path.join(here, "openlrm.py"))
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    sys.path.insert(0, openlrm)
    torch.use_deterministic_algorithms(True)
    fixture = os.path.join(here, "..", "..", "tests", "parity", "fixtures", "openlrm-v1.1", "model.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = gen._build_v11(tmp)
        with open(os.path.join(tmp, "model.safetensors"), "rb") as f, open(fixture, "rb") as g:
            if f.read() != g.read():
                raise SystemExit("the rebuilt OpenLRM v1.1 checkpoint differs from the parity fixture's")
    from openlrm.runners.infer.lrm import LRMInferrer

    runner = types.SimpleNamespace(model=model, device=torch.device("cpu"))
    runner._default_source_camera = types.MethodType(LRMInferrer._default_source_camera, runner)
    size = gen.V11_SOURCE
    out = {}
    for stem, path in files.items():
        got = {}

        def infer_planes(image, source_cam_dist, _got=got):
            _got["image"] = image
            _got["planes"] = LRMInferrer.infer_planes(runner, image, source_cam_dist)
            raise _Captured

        _openlrm_infer_single(LRMInferrer, path, size, infer_planes)
        if not np.array_equal(got["image"][0].numpy(), inputs[f"openlrm_{stem}_{size}"]):
            raise SystemExit(f"OpenLRM's inferrer prepared another input for {stem} than the recorded one")
        out[stem] = got["planes"].float().numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triposr", required=True, help="TripoSR checkout at d26e331")
    ap.add_argument("--openlrm", required=True, help="OpenLRM checkout at 3108b69")
    ap.add_argument("--openlrm10", required=True, help="OpenLRM checkout at v1.0.0 (d4caebb)")
    ap.add_argument("--triposr-model", default=None,
                    help="also record TripoSR's planes from each file with this checkpoint folder "
                         "(tests/parity/fixtures/triposr; needs transformers==4.35.0 as tools/parity/triposr.py)")
    ap.add_argument("--openlrm-planes", action="store_true",
                    help="also record OpenLRM v1.1's planes from each file with its parity checkpoint "
                         "(needs huggingface_hub==0.23.0 accelerate==0.29.3 as tools/parity/openlrm.py)")
    ap.add_argument("--out", default="tests/parity/fixtures/preprocess")
    a = ap.parse_args()
    from PIL import Image

    stub_missing(["rembg", "mcubes", "torchmcubes"], attrs=("remove", "new_session", "marching_cubes"))
    os.makedirs(a.out, exist_ok=True)
    files = {}
    for stem, arr in _images().items():
        files[stem] = os.path.join(a.out, f"{stem}.png")
        Image.fromarray(arr).save(files[stem], optimize=False)
    arrays = {**record_triposr(a.triposr, files), **record_openlrm(a.openlrm, files),
              **record_openlrm10(a.openlrm10, files)}
    np.savez_compressed(os.path.join(a.out, "inputs.npz"), **arrays)
    if a.triposr_model:
        planes = record_triposr_planes(a.triposr, a.triposr_model, files, arrays)
        np.savez_compressed(os.path.join(a.out, "planes-triposr.npz"), **{f"triposr_{k}": v for k, v in planes.items()})
    if a.openlrm_planes:
        planes = record_openlrm_planes(a.openlrm, files, arrays)
        np.savez_compressed(os.path.join(a.out, "planes-openlrm.npz"), **{f"openlrm_{k}": v for k, v in planes.items()})
    meta = {"generator": "tools/parity/preprocess.py",
            "triposr": {"original": "VAST-AI-Research/TripoSR", "commit": TRIPOSR_COMMIT,
                        "checkout_head": commit(a.triposr), "foreground_ratio": RATIO,
                        "sizes": list(TRIPOSR_SIZES), "steps": "run.py's image loop + tsr.utils.ImagePreprocessor"},
            "openlrm": {"original": "3DTopia/OpenLRM", "commit": OPENLRM_COMMIT,
                        "checkout_head": commit(a.openlrm), "sizes": list(OPENLRM_SIZES),
                        "steps": "openlrm/runners/infer/lrm.py LRMInferrer.infer_single up to infer_planes"},
            "openlrm10": {"original": "3DTopia/OpenLRM", "commit": OPENLRM10_COMMIT,
                          "checkout_head": commit(a.openlrm10), "sizes": list(OPENLRM10_SIZES),
                          "steps": "lrm/inferrer.py LRMInferrer.infer up to infer_single"},
            "files": sorted(os.path.basename(p) for p in files.values()),
            # the planes files (each from its own run, in the environment its family's generator pins)
            "planes": {k: v for k, v in {
                "planes-triposr.npz": {"checkpoint": "tests/parity/fixtures/triposr", "with": "transformers==4.35.0",
                                       "steps": "run.py's image loop + TSR.forward"},
                "planes-openlrm.npz": {"checkpoint": "tests/parity/fixtures/openlrm-v1.1",
                                       "with": "huggingface_hub==0.23.0 accelerate==0.29.3",
                                       "steps": "LRMInferrer.infer_single + its infer_planes"},
            }.items() if os.path.exists(os.path.join(a.out, k))},
            "stats": {k: [float(v.min()), float(v.max())] for k, v in sorted(arrays.items())},
            "versions": versions(["PIL"])}
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(files)} images and {len(arrays)} inputs to {a.out}")


if __name__ == "__main__":
    main()
