import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run bench/scripts/gpu_suite.sh on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_threads_and_rng():
    """Every test leaves torch's thread count and RNG state as it found them (a test that sets
    torch.set_num_threads(1), e.g. the DDP tests, made later tests' float sums differ)."""
    threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    torch.set_rng_state(rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state_all(cuda_rng)


@pytest.fixture
def tiny_cfg():
    from lrm_fast.config import LRMConfig

    return LRMConfig.preset("tiny")


@pytest.fixture
def tiny_model(tiny_cfg):
    from lrm_fast.model.lrm import LRM

    torch.manual_seed(0)
    return LRM(tiny_cfg)
