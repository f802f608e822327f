"""lrm_fast: fast single-image 3D reconstruction with the Large Reconstruction Model (LRM).

Public API::

    import lrm_fast
    model = lrm_fast.load_model("tiny")        # preset (random weights) or checkpoint (ours/OpenLRM/TripoSR)
    rec = model.reconstruct("photo.png")       # == lrm_fast.reconstruct(model, "photo.png")
    rec.render(azimuths=[0, 90], elevations=20, resolution=128)["rgb"]   # [B, V, H, W, 3]
    rec.mesh()                                 # trimesh.Trimesh with vertex colors
    rec.save("out/", formats=("glb", "mp4"))
    lrm_fast.reconstruct_many(model, "photos/", "outputs", batch_size=8)   # a folder / .txt list, resumable
    rgba = lrm_fast.remove_background("photo.jpg")   # the cut-out reconstruct() makes of an opaque photo
"""
from ._version import __version__

from .config import LRMConfig
from .model.lrm import LRM
from .api import Reconstruction, load_model, reconstruct
from .io.background import remove_background
from .batch import reconstruct_many
from .info import info

__all__ = ["LRM", "LRMConfig", "Reconstruction", "load_model", "reconstruct", "reconstruct_many", "remove_background", "info", "__version__"]
