import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run bench/gpu_suite.sh on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_cfg():
    from lrm_fast.config import LRMConfig

    return LRMConfig.preset("tiny")


@pytest.fixture
def tiny_model(tiny_cfg):
    from lrm_fast.model.lrm import LRM

    torch.manual_seed(0)
    return LRM(tiny_cfg)
