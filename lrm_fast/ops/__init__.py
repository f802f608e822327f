"""Hot-path ops. Each file holds one op (or one family): its public function (shape-annotated
docstring, input checks), its pure-PyTorch twin ``_<name>_ref`` (the spec, with exactly the
arguments of the fast implementations) and its fast implementations registered with
``_dispatch``. ``backend`` strings are resolved per call (see ``_dispatch``)."""
import torch

from . import _dispatch, per_sample
from .attention import attention
from .composite import composite, composite_samples, composite_samples_weights, composite_weights
from .modulated_layer_norm import modulated_layer_norm
from .occupancy import (composite_samples_packed, composite_samples_packed_weights, occupancy_gather, occupancy_mark,
                        occupancy_merge, occupancy_pack, occupancy_unpack)
from .raymarch import generate_rays, importance, merge_samples, ray_box, ray_points, stratified
from .triplane_mlp import triplane_mlp

# every op registered with _dispatch by the imports above, in the pipeline's order: what
# `lrm-fast info` describes (tests/test_twin_signatures.py checks it against the registry)
OPS = ("attention", "modulated_layer_norm", "triplane_mlp", "generate_rays", "ray_box", "stratified",
       "importance", "ray_points", "merge_samples", "composite", "composite_weights", "composite_samples",
       "composite_samples_weights", "occupancy_mark", "occupancy_pack", "occupancy_unpack", "occupancy_merge",
       "occupancy_gather", "composite_samples_packed", "composite_samples_packed_weights")


def describe_all(device="cpu", dtype=None) -> list[str]:
    """One line per op: which path it takes on ``device``/``dtype`` with backend "auto", and why."""
    dtype = dtype or torch.float32
    return [_dispatch.describe(op, device, dtype) for op in OPS]


__all__ = ["attention", "composite", "composite_samples", "composite_samples_packed",
           "composite_samples_packed_weights", "composite_samples_weights", "composite_weights",
           "modulated_layer_norm", "per_sample", "generate_rays", "importance", "merge_samples", "occupancy_gather",
           "occupancy_mark", "occupancy_merge", "occupancy_pack", "occupancy_unpack", "ray_box", "ray_points",
           "stratified", "triplane_mlp", "describe_all", "OPS"]
