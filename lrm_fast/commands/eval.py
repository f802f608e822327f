"""``lrm-fast eval MODEL``: held-out benchmark with baselines (``lrm_fast.train.evaluate``)."""
from __future__ import annotations

from ..train.evaluate import add_arguments, run  # noqa: F401
