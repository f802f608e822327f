"""torchrun's environment, shared by the trainer and batch reconstruction (one owner, no cluster code).

torchrun (``torch.distributed.run``) starts one process per GPU and sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` (plus ``MASTER_ADDR``/``MASTER_PORT`` for ``init_process_group``); a plain ``python``
run has none of them and is rank 0 of 1.
"""
from __future__ import annotations

import os

import torch


def dist_info() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (``(0, 1, 0)`` without it)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(name: str, local_rank: int, cuda_available: bool) -> torch.device:
    """This process's device: ``"auto"`` is this process's GPU (``cuda:<local rank>``) when there is
    one, else the CPU; a bare ``"cuda"`` gets the local rank's index too (``torch.cuda.set_device``
    refuses a device without one: the first GPU run's training tests failed on it)."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if cuda_available else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev
