"""The memory budget (``lrm_fast/memory.py``): sizes parse, the default follows what is free, and chunk
counts come from it."""
import pytest
import torch

from lrm_fast.memory import DEFAULT_SHARE, MemoryBudget, available, parse_memory


@pytest.mark.parametrize("value, expect", [
    (1024, 1024), (2.5e9, 2_500_000_000), ("4GB", 4_000_000_000), ("4 gb", 4_000_000_000), ("4G", 4_000_000_000),
    ("512MiB", 512 << 20), ("1.5GiB", 3 << 29), ("100k", 100_000), ("42", 42), (None, None), ("auto", None)])
def test_parse_memory(value, expect):
    assert parse_memory(value) == expect


@pytest.mark.parametrize("bad", ["", "four GB", "4XB", "-1GB", 0, -5, True, "1e9"])
def test_parse_memory_refuses_with_one_line(bad):
    if bad == "":
        assert parse_memory(bad) is None
        return
    with pytest.raises(ValueError, match="max_memory") as e:
        parse_memory(bad)
    assert "\n" not in str(e.value)


def test_default_budget_is_a_share_of_what_is_free():
    free = available("cpu")
    assert free > 0
    b = MemoryBudget.resolve(None, "cpu")
    assert b.source == "free on cpu"
    assert abs(b.bytes - free * DEFAULT_SHARE) < 0.05 * free + (1 << 26)
    assert MemoryBudget.resolve("2GB").bytes == 2_000_000_000
    assert MemoryBudget.resolve(b) is b


def test_count_and_chunks():
    b = MemoryBudget(1000)
    assert b.count(10) == 100
    assert b.count(10, total=30) == 30          # it fits: one pass
    assert b.count(10_000) == 1                 # never below the minimum
    assert b.count(10, share=0.5) == 50
    # 250 items of which 100 fit: 3 chunks of 84 (not 100, 100, 50)
    assert b.chunks(10, 250) == 84
    assert b.chunks(10, 80) == 80
    assert b.chunks(10, 0) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.gpu
def test_cuda_available():
    assert available("cuda") > 0
