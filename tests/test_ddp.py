"""DDP on CPU (gloo, 2 processes): the same losses and weights as one process with the same global batch."""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from lrm_fast.data.synthetic import make_dataset
from lrm_fast.train.config import TrainConfig


def _cfg(root, out):
    # jitter off: render noise then does not depend on how the batch is split across processes
    return dict(model="tiny", data_root=root, side_views=1, render_size=16, patch=8, batch_size=4, steps=3,
                warmup=1, lr=3e-3, out_dir=out, log_every=1, ckpt_every=100, progress=False, jitter=False,
                threads=1, device="cpu")


def _worker(rank, world, port, cfg):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from lrm_fast.train.trainer import train

    train(TrainConfig.from_dict(cfg))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [r["loss"] for r in map(json.loads, f) if "loss" in r]


def test_ddp_two_processes_match_one(tmp_path):
    from lrm_fast.io.checkpoint import read_state_dict
    from lrm_fast.train.trainer import train

    root = str(tmp_path / "data")
    make_dataset(root, 8, n_views=3, resolution=16, seed=0, workers=1)
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    train(TrainConfig.from_dict(_cfg(root, one)))
    mp.start_processes(_worker, args=(2, _free_port(), _cfg(root, two)), nprocs=2, join=True,
                       start_method="spawn")
    l1, l2 = _losses(one), _losses(two)
    assert len(l1) == len(l2) == 3
    assert l2 == pytest.approx(l1, rel=1e-4)
    w1 = read_state_dict(os.path.join(one, "model", "model.safetensors"))
    w2 = read_state_dict(os.path.join(two, "model", "model.safetensors"))
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=2e-5, rtol=1e-4)
    log = [json.loads(x) for x in open(os.path.join(two, "log.jsonl"))]
    assert log[0]["world"] == 2
