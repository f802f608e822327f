"""Hot-path ops. Each file holds one op: its public function (shape-annotated docstring, input
checks), its pure-PyTorch twin ``_<name>_ref`` (the spec), and its fast implementations registered
with ``_dispatch``. ``backend`` strings are resolved per call (see ``_dispatch``)."""
import torch

from . import _dispatch, per_sample
from .attention import attention
from .composite import composite, composite_samples, composite_weights
from .modulated_layer_norm import modulated_layer_norm
from .raymarch import generate_rays, importance, merge_samples, ray_box, ray_points, stratified
from .triplane_mlp import triplane_mlp

OPS = ("attention", "modulated_layer_norm", "triplane_mlp", "generate_rays", "ray_box", "stratified",
       "importance", "ray_points", "merge_samples", "composite", "composite_samples", "composite_weights")


def describe_all(device="cpu", dtype=None) -> list[str]:
    """One line per op: which path it takes on ``device``/``dtype`` with backend "auto", and why."""
    dtype = dtype or torch.float32
    return [_dispatch.describe(op, device, dtype) for op in OPS]


__all__ = ["attention", "composite", "composite_samples", "composite_weights", "modulated_layer_norm", "per_sample",
           "generate_rays", "importance", "merge_samples", "ray_box", "ray_points", "stratified", "triplane_mlp",
           "describe_all", "OPS"]
