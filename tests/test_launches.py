"""The launch / sync counter (``bench/lib/launches.py``) counts what it says on known code, and what
the renderer's launch and sync budget (the GPU issue's rules) holds on the path a CUDA device takes."""
import pytest
import torch

from bench.lib.launches import LaunchCounter, count_render


def test_counts_ops_and_syncs_of_known_code():
    x = torch.randn(64)
    with LaunchCounter() as c:
        y = (x * 2 + 1).relu()          # 3 kernels
        y.view(8, 8).t()                # metadata only: not kernels
    assert c.ops == 3 and c.syncs == 0
    with LaunchCounter() as c:
        float(y.sum())                  # a reduction, then a scalar read: 1 sync
        y[y > 0]                        # a boolean mask: a data-dependent shape
        torch.nonzero(y)
    assert c.sync_ops["aten::_local_scalar_dense"] == 1 and c.sync_ops["aten::nonzero"] == 1
    assert c.syncs == 3 and c.by_op["aten::index"] == 1
    with LaunchCounter() as c:
        y[:2].tolist()                  # a host read that bypasses the dispatcher
    assert c.sync_ops == {"Tensor.tolist": 1}


def test_kernel_syncs_are_the_sizes_not_given():
    """A packing op's CUDA kernel reads each output size its caller does not give: the counter counts
    those (on any device), and none where the sizes are given."""
    from lrm_fast.ops import _dispatch
    from lrm_fast.ops.occupancy import occupancy_gather, occupancy_pack

    if _dispatch.resolve("occupancy_pack", "auto", torch.zeros(1))[0] != "cpp":
        pytest.skip("lrm_fast._C not built")
    o, d = torch.zeros(2, 3), torch.tensor([[0.0, 0.0, 1.0]] * 2)
    t, keep = torch.linspace(-1, 1, 3).repeat(2, 1), torch.tensor([[True, True, False]] * 2)
    off, off_n, src = torch.tensor([0, 2, 4]), torch.tensor([0, 0, 0]), torch.tensor([[0, 1, -2], [2, 3, -2]])
    raw = torch.zeros(4, 4)
    with LaunchCounter() as c:
        occupancy_pack(o, d, t, keep, off)
        occupancy_gather(o, d, t, keep, src, off, off_n, raw)
    assert dict(c.sync_ops) == {"lrm_fast::occupancy_pack": 1, "lrm_fast::occupancy_gather": 2}
    with LaunchCounter() as c:
        occupancy_pack(o, d, t, keep, off, 4)
        occupancy_gather(o, d, t, keep, src, off, off_n, raw, 4, 0)
    assert c.syncs == 0 and c.ops == 2, dict(c.sync_ops)


def test_exact_render_launches_do_not_grow_with_batch_or_image(tiny_model):
    """The launch budget of an exact render on the GPU's path: every ray of every batch item and view
    in one pass, so the same ops for 1 or 8 triplanes and for a 64^2 or a 512^2 view, and no sync."""
    m = tiny_model.eval()
    counts = {}
    for B, res, V in ((1, 64, 2), (8, 64, 2), (1, 512, 1), (1, 64, 1)):
        c = count_render(m, B, res, V)
        assert c.syncs == 0, dict(c.sync_ops)
        counts[B, res, V] = c.ops
    assert counts[1, 64, 2] == counts[8, 64, 2]
    assert counts[1, 64, 1] == counts[1, 512, 1] == counts[1, 64, 2]


def test_skipping_render_launches_do_not_grow_with_batch(tiny_model):
    """A skipping render (occupancy grid) queries the field once per pass for every batch item (padded
    to the longest item); each pass reads every size it needs (the packed totals, the longest
    item's count) in one host read and gives them to the packing ops and the field query, so no
    kernel reads its own (``KERNEL_SYNCS``): the issue's budget, 2 syncs whatever the batch."""
    m = tiny_model.eval()
    one, eight = count_render(m, 1, 32, 2, skipping=True), count_render(m, 8, 32, 2, skipping=True)
    assert one.ops == eight.ops, (dict(one.by_op), dict(eight.by_op))
    assert one.syncs == eight.syncs == 2, (dict(one.sync_ops), dict(eight.sync_ops))
    assert dict(one.sync_ops) == {"Tensor.tolist": 2}, dict(one.sync_ops)
    assert count_render(m, 1, 128, 1, skipping=True).ops == one.ops


def test_a_chunked_render_launches_per_chunk_only(tiny_model):
    """A budget that forces chunks: each chunk covers every batch item, so the ops grow with the
    chunks, never with the batch."""
    from lrm_fast.render.renderer import ray_bytes

    m = tiny_model.eval()
    r = m.renderer
    per_ray = ray_bytes(r.cfg, r.field, m.cfg.triplane.channels, 4, False)
    one = count_render(m, 1, 16, 1, max_memory=128 * per_ray)       # 256 rays: 2 chunks
    eight = count_render(m, 8, 16, 1, max_memory=8 * 128 * per_ray)
    whole = count_render(m, 1, 16, 1)
    assert one.ops == eight.ops and whole.ops < one.ops


def test_training_step_launches_do_not_grow_with_batch_or_view(tmp_path):
    """The GPU issue's rule for a training step, on the path a CUDA device takes: no host sync, and the
    same ops for 2 and 8 batch items and for a small and a larger view. Batch 1 may differ by a
    constant: autograd elides the reduction of a broadcast (a parameter expanded over the batch) that
    has nothing to reduce; it never grows per item."""
    from bench.lib.launches import count_train_step
    from lrm_fast.data.synthetic import make_dataset

    root = str(tmp_path / "data")
    make_dataset(root, 8, n_views=2, resolution=16, seed=0, workers=1, depth=False)
    c = {(b, r): count_train_step(root, b, r, str(tmp_path / f"run{b}-{r}")) for b, r in
         ((1, 8), (2, 8), (8, 8), (2, 16))}
    assert all(x.syncs == 0 for x in c.values()), {k: dict(x.sync_ops) for k, x in c.items()}
    assert c[(2, 8)].ops == c[(8, 8)].ops == c[(2, 16)].ops
    assert abs(c[(1, 8)].ops - c[(2, 8)].ops) <= 4
