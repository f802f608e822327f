"""``torch.compile`` of the reference: the peer a user would try instead of lrm_fast.

One home for how the benchmarks compile our plain-PyTorch spec (``backend="reference"``), so the
device table's ``compile`` column and the anchors' compiled-reference rows time the same thing:

* ``"planes"`` (image -> triplane): ``LRM.compile_planes(mode="compile")``, the fixed-shape runner
  (``model/compiled.py``). ``LRM.forward_planes`` checks its camera on the host, a graph break; the
  runner computes the same without it. It compiles and runs ``warmup_iters`` calls when built.
* ``"render"`` (one view) and ``"query"`` (the field at points, the mesh grid): ``torch.compile`` of
  ``model.render`` / ``model.field.query``; they compile at their first call.

``ANCHORS_MODE`` is what a user tuning for speed on a CPU picks: inductor with matmul autotuning and
no CUDA graphs (minutes of compilation per shape, paid once per shape and process).
"""
from __future__ import annotations

import torch
from torch.utils._pytree import tree_leaves

ENTRIES = ("planes", "render", "query")
ANCHORS_MODE = "max-autotune-no-cudagraphs"


def reference_entry(model, what: str):
    """The uncompiled entry point ``what`` of ``model``, with the compiled one's signature."""
    if what not in ENTRIES:
        raise ValueError(f"entry must be one of {ENTRIES}, got {what!r}")
    # only the entry asked for: a field without an image path (bench/lib/fitted_field.py's FittedField:
    # ``field`` and ``renderer``, no ``forward_planes`` or ``render``) has a render and a query
    if what == "planes":
        return model.forward_planes
    if what == "render":
        return model.render if hasattr(model, "render") else model.renderer
    return model.field.query


def compile_reference(model, what: str, dtype: torch.dtype = torch.float32, warmup_iters: int = 2,
                      **compile_kwargs):
    """(compiled entry ``what`` of ``model``, calls it made while being built). Same signature as
    ``reference_entry(model, what)``; ``compile_kwargs`` go to ``torch.compile`` (``mode``,
    ``backend``). ``dtype``: the planes runner's precision (render and query run in the model's)."""
    if what not in ENTRIES:
        raise ValueError(f"entry must be one of {ENTRIES}, got {what!r}")
    if what == "planes":
        runner = model.compile_planes(1, dtype, mode="compile", compile_kwargs=compile_kwargs,
                                      warmup_iters=warmup_iters)
        return runner, max(warmup_iters, 1)
    return torch.compile(reference_entry(model, what), **compile_kwargs), 0


def max_abs_diff(a, b) -> float:
    """Largest ``|a - b|`` over the tensors of two outputs of the same structure (a tensor, a tuple, a
    dict); equal entries count 0, so infinities in the same place (a background depth) are no error,
    and a NaN on one side only is an infinite error."""
    la, lb = tree_leaves(a), tree_leaves(b)
    if len(la) != len(lb):
        raise ValueError(f"outputs differ in structure: {len(la)} vs {len(lb)} tensors")
    worst = 0.0
    for x, y in zip(la, lb):
        if not isinstance(x, torch.Tensor):
            continue
        if x.shape != y.shape:
            raise ValueError(f"outputs differ in shape: {list(x.shape)} vs {list(y.shape)}")
        d = torch.where(x == y, 0.0, (x.float() - y.float()).abs()).nan_to_num(nan=float("inf"))
        worst = max(worst, float(d.max()) if d.numel() else 0.0)
    return worst
