"""What the parity generators (``openlrm.py``, ``triposr.py``) share: stubbing modules an original
imports but the recording does not use, OpenLRM's renderer made deterministic (also used by
``bench/scripts/anchors.py``, which imports this file as ``tools.parity._common``), the seeded synthetic weights' common rules, the pinned
versions and checkout commit, and writing ``stages.npz`` + ``meta.json``. Ours, like the
generators; nothing here comes from the originals."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import types
from typing import Callable, Optional

import numpy as np
import torch


def stub_missing(names, attrs=("marching_cubes",)) -> None:
    """Put a stand-in module in ``sys.modules`` for each of ``names`` that is not installed: an
    original imports it at module level for a feature the recording never calls; each of ``attrs``
    raises if called."""
    for name in names:
        try:
            __import__(name)
        except ImportError:
            mod = types.ModuleType(name)

            def _unavailable(*a, _n=name, **k):
                raise RuntimeError(f"{_n} is stubbed in the parity generator")
            for attr in attrs:
                setattr(mod, attr, _unavailable)
            sys.modules[name] = mod


Rule = Callable[[str, str, torch.Tensor, torch.Tensor], Optional[torch.Tensor]]


def synthetic_weights(model: torch.nn.Module, seed: int, *, is_norm: Callable[[str, str, torch.Tensor], bool],
                      is_bias: Callable[[str], bool], is_embedding: Callable[[str, str], bool], matrix: Rule,
                      other: Optional[Rule] = None) -> None:
    """Every parameter from N(0, 1) (one float64 draw per parameter, in ``named_parameters`` order,
    from a generator seeded with ``seed``) times a per-kind scale. The common rules, first match
    wins: norm weights ``1 + 0.3 N`` and biases ``0.2 N`` (``is_norm(name, leaf, p)``);
    ``other(name, leaf, p, n)`` when it returns a value; biases ``0.2 N`` (``is_bias(leaf)``);
    embeddings ``N`` (``is_embedding(name, leaf)``); parameters of 2+ dims
    ``matrix(name, leaf, p, n)`` (each original's fan-in and attention query/key gain); else
    ``0.2 N``. The caller adjusts single layers afterwards."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=g, dtype=torch.float64)
            leaf = name.rsplit(".", 1)[-1]
            v = None
            if is_norm(name, leaf, p):
                v = 1 + 0.3 * n if leaf == "weight" else 0.2 * n
            elif other is not None:
                v = other(name, leaf, p, n)
            if v is None:
                if is_bias(leaf):
                    v = 0.2 * n
                elif is_embedding(name, leaf):
                    v = n
                elif p.dim() >= 2:
                    v = matrix(name, leaf, p, n)
                else:
                    v = 0.2 * n
            p.copy_(v.to(p.dtype))


def deterministic_sampling(renderer_cls) -> Callable[[], None]:
    """OpenLRM's ``ImportanceRenderer`` (``renderer_cls``) without its inference-time randomness: it
    jitters its stratified depths (``torch.rand_like``) and draws its importance samples at random CDF
    levels, even at inference. Patched in place: zero jitter (its own ``depths + rand * delta`` with
    rand = 0) and its own ``sample_pdf(det=True)``, which is what our renderer computes. Returns the
    function that puts the originals back. Used by the parity generator (``openlrm.py``, for the whole
    run) and by ``bench/scripts/anchors.py`` (``openlrm_deterministic``, inside a block)."""
    strat, pdf = renderer_cls.sample_stratified, renderer_cls.sample_pdf

    def sample_stratified(self, *a, **k):
        rand_like = torch.rand_like
        torch.rand_like = torch.zeros_like
        try:
            return strat(self, *a, **k)
        finally:
            torch.rand_like = rand_like

    def sample_pdf(self, bins, weights, N_importance, det=False, eps=1e-5):
        return pdf(self, bins, weights, N_importance, det=True, eps=eps)

    renderer_cls.sample_stratified, renderer_cls.sample_pdf = sample_stratified, sample_pdf

    def undo() -> None:
        renderer_cls.sample_stratified, renderer_cls.sample_pdf = strat, pdf
    return undo


def versions(modules=()) -> dict:
    """python, torch, numpy and each of ``modules`` that imports, by version."""
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for mod in modules:
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def commit(checkout: str) -> str:
    """The checkout's HEAD commit ("" for an exported tree without .git)."""
    try:
        return subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - an exported tree (git archive) has no .git
        return ""


def to_numpy(st: dict) -> dict:
    """The recorded stages as arrays: bool and uint8 tensors as they are, the rest float32."""
    return {k: (v.numpy() if v.dtype in (torch.bool, torch.uint8) else v.detach().float().numpy())
            for k, v in st.items()}


def write_fixture(out: str, stages: dict, meta: dict) -> None:
    """``stages.npz`` (compressed) and ``meta.json`` (sorted, indented, with each stage's [min, max]
    added as ``stats``) in the folder ``out``."""
    np.savez_compressed(os.path.join(out, "stages.npz"), **stages)
    meta = {**meta, "stats": {k: [float(v.min()), float(v.max())] for k, v in stages.items()}}
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
