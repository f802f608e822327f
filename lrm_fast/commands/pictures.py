"""``lrm-fast pictures MODEL OUT.png``: the README/model-card figure (``lrm_fast.train.pictures``)."""
from __future__ import annotations

from ..train.pictures import add_arguments, run  # noqa: F401
