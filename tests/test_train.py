"""Trainer: loss goes down, resume-after-kill equivalence, AMP paths, LPIPS, export, config errors."""
import json
import math
import os

import pytest
import torch

from lrm_fast.data.synthetic import make_dataset
from lrm_fast.train.config import TrainConfig
from lrm_fast.train.trainer import Trainer, batch_indices, lr_lambda


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("train_data"))
    make_dataset(root, 6, n_views=4, resolution=16, seed=0, workers=1)
    return root


def _cfg(data_root, out, **kw):
    base = dict(model="tiny", data_root=data_root, side_views=1, render_size=16, patch=8, batch_size=2,
                steps=4, warmup=1, lr=3e-3, out_dir=str(out), log_every=1, ckpt_every=100, progress=False,
                threads=1,
                # source views as rendered: the trainer prepares them like reconstruct() does, with the
                # model's foreground_ratio, and tiny's 0.8 would recenter these synthetic views
                model_overrides={"encoder": {"foreground_ratio": 0.0}})
    base.update(kw)
    return TrainConfig.from_dict(base)


def _losses(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def test_schedule_and_batches():
    f = lr_lambda(10, 110, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)
    e0, a = batch_indices(0, 10, 4, 0)
    e1, b = batch_indices(1, 10, 4, 0)
    e2, c = batch_indices(2, 10, 4, 0)
    assert (e0, e1, e2) == (0, 0, 1) and len(set(a + b)) == 8 and batch_indices(2, 10, 4, 0) == (e2, c)


def test_loss_decreases_on_fixed_batch(data_root, tmp_path):
    tr = Trainer(_cfg(data_root, tmp_path, jitter=False, steps=100, warmup=2, lr=5e-3))
    batch = next(tr.batches())
    first = float(tr.loss_fn(batch, 0)[0].detach())
    for _ in range(15):
        tr.train_step(batch)
    assert float(tr.loss_fn(batch, 0)[0].detach()) < 0.7 * first


def test_resume_after_kill_gives_same_losses(data_root, tmp_path):
    full = tmp_path / "full"
    before = torch.get_num_threads()
    Trainer(_cfg(data_root, full)).fit()          # threads=1 while it trains, then given back
    assert torch.get_num_threads() == before
    ref = _losses(full)
    assert sorted(ref) == [1, 2, 3, 4]

    part = tmp_path / "part"
    tr = Trainer(_cfg(data_root, part))
    step = tr.train_step

    def killed_after_two(batch):  # SIGTERM arriving during step 2
        out = step(batch)
        if tr.step == 2:
            tr._stop = "SIGTERM"
        return out

    tr.train_step = killed_after_two
    tr.fit()
    assert tr.step == 2 and os.path.exists(part / "checkpoint" / "last.pt")
    Trainer(_cfg(data_root, part), resume=True).fit()
    got = _losses(part)
    assert sorted(got) == [1, 2, 3, 4]
    for s in ref:
        assert got[s] == pytest.approx(ref[s], rel=1e-5, abs=1e-7), s


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_paths_run(data_root, tmp_path, precision):
    tr = Trainer(_cfg(data_root, tmp_path, precision=precision))
    assert tr.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert tr.scaler.is_enabled() == (precision == "fp16")
    stats = tr.train_step(next(tr.batches()))
    assert torch.isfinite(stats["loss"])
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())


def test_lpips_checkpointing_frozen_encoder_and_export(data_root, tmp_path):
    import lrm_fast

    pytest.importorskip("lpips")

    cfg = _cfg(data_root, tmp_path, steps=2, patch=16, lpips_weight=0.5, lpips_random=True, grad_checkpointing=True,
               freeze_encoder=True, mask_weight=0.1)
    tr = Trainer(cfg)
    assert tr.model.cfg.decoder.grad_checkpointing and "RANDOM" in tr.lpips.describe()
    enc = {k: v.clone() for k, v in tr.model.encoder.state_dict().items()}
    dec = tr.model.pos_embed.detach().clone()
    tr.fit()
    for k, v in tr.model.encoder.state_dict().items():
        assert torch.equal(v, enc[k]), k
    assert not torch.equal(tr.model.pos_embed, dec)
    log = [json.loads(x) for x in open(tmp_path / "log.jsonl")]
    assert "RANDOM backbone" in log[0]["lpips"] and "lpips" in log[1] and "mask" in log[1]
    assert {"loss", "psnr", "lr", "items_per_s", "peak_mem_mb"} <= set(log[1])
    # exported model folder loads and renders the same as the trained model
    m = lrm_fast.load_model(str(tmp_path / "model"), device="cpu")
    x = torch.rand(1, 3, 28, 28)
    tr.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(m.forward_planes(x), tr.model.forward_planes(x))


def test_config_errors(data_root, tmp_path):
    with pytest.raises(ValueError, match="unknown train config keys"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="precision"):
        TrainConfig.from_dict({"precision": "fp8"})
    with pytest.raises(ValueError, match="train_chunk_rays is retired"):
        TrainConfig.from_dict({"train_chunk_rays": 4096})
    with pytest.raises(ValueError, match="lpips_weights"):
        TrainConfig.from_dict({"lpips_weight": 1.0})
    with pytest.raises(FileNotFoundError, match="train config not found"):
        TrainConfig.load(str(tmp_path / "none.yaml"))
    with pytest.raises(FileNotFoundError, match="dataset root not found"):
        Trainer(_cfg(str(tmp_path / "missing"), tmp_path))
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        Trainer(_cfg(data_root, tmp_path / "fresh"), resume=True)
    p = tmp_path / "c.yaml"
    p.write_text("model: tiny\nsteps: 3\n")
    assert TrainConfig.load(str(p), {"batch_size": 4}).batch_size == 4


def test_evaluate_and_cli(data_root, tmp_path):
    from lrm_fast.cli import main
    from lrm_fast.train.evaluate import evaluate
    import lrm_fast

    res = evaluate(lrm_fast.load_model("tiny", device="cpu"), data_root, objects=3, views=2, resolution=12)
    assert res["objects"] == 3 and res["baseline_iou"] == 0.0
    assert 0 <= res["iou"] <= 1 and res["baseline_psnr"] > 0
    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps(_cfg(data_root, tmp_path / "run", steps=1).to_dict()))
    assert main(["train", str(cfg)]) == 0
    assert os.path.exists(tmp_path / "run" / "model" / "model.safetensors")
    assert main(["make-data", str(tmp_path / "d"), "--objects", "1", "--views", "2", "--resolution", "8",
                 "--workers", "1"]) == 0
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2


def test_demo_preset_size():
    from lrm_fast.config import LRMConfig
    from lrm_fast.model.lrm import count_parameters

    n = count_parameters(LRMConfig.preset("demo"))["total"]
    assert n <= 12_000_000  # fp16 safetensors <= 25 MB


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_gpu_training_steps_and_resume(data_root, tmp_path, precision):
    # auto = bf16 autocast on CUDA; a few steps must lower the loss on a fixed batch and resume must
    # replay the same losses on the GPU too
    tr = Trainer(_cfg(data_root, tmp_path / "a", precision=precision, steps=100, warmup=2, lr=5e-3,
                      jitter=False, device="cuda", threads=None))
    assert tr.device.type == "cuda" and tr.precision == ("bf16" if precision == "auto" else "fp16")
    batch = next(tr.batches())
    first = float(tr.loss_fn(batch, 0)[0].detach())
    for _ in range(15):
        tr.train_step(batch)
    assert float(tr.loss_fn(batch, 0)[0].detach()) < 0.8 * first
    full = tmp_path / "full"
    Trainer(_cfg(data_root, full, precision=precision, device="cuda", jitter=False)).fit()
    part = tmp_path / "part"
    t2 = Trainer(_cfg(data_root, part, precision=precision, device="cuda", jitter=False))
    step = t2.train_step

    def killed_after_two(b):
        out = step(b)
        if t2.step == 2:
            t2._stop = "SIGTERM"
        return out

    t2.train_step = killed_after_two
    t2.fit()
    Trainer(_cfg(data_root, part, precision=precision, device="cuda", jitter=False), resume=True).fit()
    ref, got = _losses(full), _losses(part)
    for s in ref:
        assert got[s] == pytest.approx(ref[s], rel=1e-4, abs=1e-6), s


def test_source_view_matches_inference_path(tmp_path):
    # item 1 of issue 15: a training source view, given to reconstruct() as the user's PNG, becomes
    # exactly the tensor the trainer fed the encoder (for a recentering and a non-recentering model)
    import lrm_fast
    from lrm_fast.config import LRMConfig
    from lrm_fast.data.openlrm import MultiViewDataset
    from lrm_fast.model.lrm import LRM

    root = str(tmp_path / "d")
    make_dataset(root, 2, n_views=5, resolution=48, seed=3, workers=1, recipe="demo", depth=False)
    for ratio in (0.0, 0.8):
        cfg = LRMConfig.preset("tiny").replace(encoder={"foreground_ratio": ratio})
        model = LRM(cfg).eval()
        tr_cfg = TrainConfig.from_dict(dict(model=cfg.to_dict(), data_root=root, source_views=4, side_views=1,
                                            render_size=16, patch=8, batch_size=1, progress=False))
        ds = Trainer(tr_cfg).dataset
        assert isinstance(ds, MultiViewDataset) and ds.foreground_ratio == ratio
        for i in range(2):
            item = ds[i]
            src = os.path.join(root, item["uid"], "rgba", "000.png")
            ds.source_view = 0
            item = ds[i]
            rec = lrm_fast.reconstruct(model, src)
            assert torch.equal(rec.inputs[0], item["source_image"]), (ratio, i)
            ds.source_view = None


def test_demo_recipe_data():
    import numpy as np
    from lrm_fast.data.synthetic import DEMO_RECIPE, canonical_c2w, make_object
    from lrm_fast.model.camera import canonical_pose

    assert np.allclose(canonical_c2w(2.0), canonical_pose(2.0).numpy(), atol=1e-6)
    prims, c2w, rgba, _ = make_object(0, 5, 10, 16, recipe=DEMO_RECIPE)
    assert 1 <= len(prims) <= 3 and all(np.linalg.norm(p.center) + p.bound_radius() <= 0.8 + 1e-5 for p in prims)
    d = np.linalg.norm(c2w[:, :3, 3], axis=-1)
    assert np.allclose(c2w[0], canonical_c2w(2.0), atol=1e-6) and np.allclose(d[:4], 2.0)
    assert ((d[4:] >= 1.9) & (d[4:] <= 2.6)).all()


def test_gpu_recipe_config_runs_on_cpu(tmp_path):
    # configs/demo-gpu.yaml loads, and its architecture trains a few steps through the same trainer
    # (device auto -> cpu here), with the wall-time LR schedule, and exports loadable weights
    import subprocess
    import lrm_fast

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data = str(tmp_path / "d")
    make_dataset(data, 3, n_views=6, resolution=32, seed=0, workers=1, recipe="rich", depth=False)
    cfg = TrainConfig.load(os.path.join(root, "configs", "demo-gpu.yaml"),
                           dict(data_root=data, out_dir=str(tmp_path / "run"), batch_size=1, render_size=16,
                                patch=8, train_samples_per_ray=8, num_workers=0, max_minutes=0.5, steps=2,
                                warmup=1, threads=1, eval_every=0))
    assert cfg.time_schedule and cfg.source_views == 4 and cfg.export_dtype == "float16"
    assert cfg.eval_recipe == "rich" and not cfg.lr_scale
    tr = Trainer(cfg)
    assert tr.model_cfg.encoder.foreground_ratio == 0.0 and tr.precision == ("bf16" if torch.cuda.is_available() else "fp32")
    assert tr.model.parameter_counts()["total"] * 2 <= 25e6   # float16 export <= 25 MB
    res = tr.fit()
    assert res["step"] == 2 and torch.isfinite(torch.tensor(res["loss"]))
    m = lrm_fast.load_model(str(tmp_path / "run" / "model"), device="cpu")
    assert m.cfg.encoder.image_size == 128 and m.cfg.triplane.high_res == 32
    out = subprocess.run(["bash", os.path.join(root, "tools", "train_demo_gpu.sh"), str(tmp_path / "o"), "--dry-run"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for s in ("make-data", "--recipe rich", "configs/demo-gpu.yaml", "lrm_fast.train.report", "eval_recipe=rich"):
        assert s in out.stdout
    assert not os.path.exists(tmp_path / "o")


def test_resolve_device_gives_cuda_an_index():
    from lrm_fast.train.trainer import resolve_device
    assert resolve_device("cuda", 1, True) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", 1, True) == torch.device("cuda", 0)
    assert resolve_device("auto", 0, False) == torch.device("cpu")
    assert resolve_device("auto", 2, True) == torch.device("cuda", 2)
    assert resolve_device("cpu", 0, True) == torch.device("cpu")


def test_init_from_our_own_export(data_root, tmp_path):
    """Fine-tuning starts from an exported model folder: every weight, the field included (our files
    store the tied ``renderer.field`` once, so its keys must not count as missing)."""
    first = tmp_path / "first"
    Trainer(_cfg(data_root, first, steps=2)).fit()
    tr = Trainer(_cfg(data_root, tmp_path / "second", steps=1, init_from=str(first / "model")))
    exported = Trainer(_cfg(data_root, tmp_path / "third", steps=1)).model  # a fresh random model differs
    from lrm_fast.io.checkpoint import read_state_dict

    sd = read_state_dict(str(first / "model" / "model.safetensors"))
    for k, v in sd.items():
        torch.testing.assert_close(tr.model.state_dict()[k], v.float(), msg=k)
    assert tr.model.renderer.field is tr.model.field
    assert not torch.equal(exported.field.net[0].weight, tr.model.field.net[0].weight)


def test_init_from_a_file_with_tied_field_copies(data_root, tmp_path):
    """Files written before the field was stored once carry ``renderer.field.*`` copies: ``init_from``
    reads them through the io rule (``io.checkpoint.upgrade_state_dict``) that ``load_model`` uses."""
    from safetensors.torch import save_file

    from lrm_fast.config import LRMConfig
    from lrm_fast.io.checkpoint import read_state_dict, save_checkpoint
    from lrm_fast.model.lrm import LRM

    torch.manual_seed(3)
    m = LRM(LRMConfig.preset("tiny").replace(encoder={"foreground_ratio": 0.0}))
    d = tmp_path / "old"
    save_checkpoint(m, str(d))
    sd = read_state_dict(str(d / "model.safetensors"))
    sd.update({"renderer." + k: v.clone() for k, v in sd.items() if k.startswith("field.")})
    save_file(sd, str(d / "model.safetensors"))
    tr = Trainer(_cfg(data_root, tmp_path / "run", steps=1, init_from=str(d)))
    for k, v in m.state_dict().items():
        torch.testing.assert_close(tr.model.state_dict()[k], v, msg=k)


def test_lr_scale_groups():
    """lr_scale: one lr multiplier per top-level module; without it the two groups of before (decay on
    matrices, none on biases / norms / pos_embed), so old configs and optimizer states are unchanged."""
    from lrm_fast.config import LRMConfig
    from lrm_fast.model.lrm import LRM
    from lrm_fast.train.trainer import param_groups

    model = LRM(LRMConfig.preset("tiny"))
    n = sum(p.numel() for p in model.parameters())
    plain = param_groups(model, TrainConfig.from_dict({"lr": 1e-3, "weight_decay": 0.05}))
    assert [(g["lr"], g["weight_decay"]) for g in plain] == [(1e-3, 0.05), (1e-3, 0.0)]
    assert sum(p.numel() for g in plain for p in g["params"]) == n
    scaled = param_groups(model, TrainConfig.from_dict({"lr": 1e-3, "weight_decay": 0.05,
                                                        "lr_scale": {"field": 10, "pos_embed": 30}}))
    assert sum(p.numel() for g in scaled for p in g["params"]) == n
    lr_of = {id(p): g["lr"] for g in scaled for p in g["params"]}
    assert lr_of[id(model.pos_embed)] == pytest.approx(3e-2)
    assert all(lr_of[id(p)] == pytest.approx(1e-2) for p in model.field.parameters())
    assert all(lr_of[id(p)] == pytest.approx(1e-3) for p in model.transformer.parameters())
    with pytest.raises(ValueError, match="not modules of the model"):
        param_groups(model, TrainConfig.from_dict({"lr_scale": {"feild": 10}}))
    with pytest.raises(ValueError, match="lr_scale"):
        TrainConfig.from_dict({"lr_scale": {"field": -1}})


def test_train_step_has_no_host_sync(data_root, tmp_path):
    """One training step on the path a GPU takes (no per-item compaction, jitter on) reads nothing on
    the host: the fused AdamW keeps its step counts on the device, GradScaler is off, clipping,
    PSNR and the loss stay tensors (the GPU issue's budget: 0 syncs per step)."""
    from bench.lib.launches import LaunchCounter

    tr = Trainer(_cfg(data_root, tmp_path))
    tr.model.renderer.compact_misses = "never"
    batch = next(tr.batches())
    for _ in range(2):  # the first step (optimizer state made) and a later one
        with LaunchCounter() as c:
            stats = tr.train_step(batch)
        assert c.syncs == 0, dict(c.sync_ops)
    assert c.ops > 0 and all(isinstance(v, torch.Tensor) for v in stats.values())


def test_fit_reads_the_host_only_at_log_steps(data_root, tmp_path, monkeypatch):
    """fit sums the stats on the device and reads them in one copy (``read_host``) per logged step;
    nothing else in the loop (progress bar, stop and checkpoint logic, the final save) syncs."""
    from bench.lib.launches import LaunchCounter
    from lrm_fast.train import trainer as trainer_mod

    tr = Trainer(_cfg(data_root, tmp_path, steps=5, log_every=2, progress=True))
    tr.model.renderer.compact_misses = "never"
    batches = list(tr.batches())  # data loading checks its host tensors: not part of the step
    tr.batches = lambda: iter(batches)
    reads = []
    read = trainer_mod.read_host
    monkeypatch.setattr(trainer_mod, "read_host", lambda t: (reads.append(tr.step), read(t))[1])
    with LaunchCounter() as c:
        res = tr.fit()
    assert dict(c.sync_ops) == {"Tensor.tolist": 3}   # read_host's one read per logged step, nothing else
    assert reads == [2, 4, 5]
    log = [json.loads(x) for x in open(tmp_path / "log.jsonl")]
    recs = [r for r in log if "loss" in r]
    assert [r["step"] for r in recs] == [2, 4, 5]
    assert {"loss", "mse", "psnr", "grad_norm", "lr", "items_per_s", "s_per_step", "peak_mem_mb"} <= set(recs[0])
    assert res["loss"] == recs[-1]["loss"] and isinstance(res["loss"], float)


def test_compiled_forward_trains_like_eager(data_root, tmp_path, monkeypatch):
    """``compile: true`` wraps the forward in torch.compile (here with the eager backend: inductor
    takes minutes on a small CPU) as one graph (fullgraph: image -> planes -> exact render of the
    sampled rays, with gradients) and trains the same steps as the uncompiled trainer; with jitter too
    (drawn from the default generator: another stream than the eager run's, so only finite here)."""
    from lrm_fast.train import trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "compile_options", lambda device: {"backend": "eager", "fullgraph": True})
    torch._dynamo.reset()
    try:
        runs = []
        for compiled, jitter in ((False, False), (True, False), (True, True)):
            tr = Trainer(_cfg(data_root, tmp_path / f"{compiled}{jitter}", compile=compiled, jitter=jitter))
            tr.model.renderer.compact_misses = "never"
            assert isinstance(tr.ddp, torch._dynamo.eval_frame.OptimizedModule) == compiled
            batch = next(tr.batches())
            runs.append([float(tr.train_step(batch)["loss"]) for _ in range(2)])
    finally:
        torch._dynamo.reset()
    assert runs[1] == pytest.approx(runs[0], rel=1e-5)
    assert all(math.isfinite(x) for x in runs[2])


@pytest.mark.gpu
def test_gpu_train_step_has_no_host_sync(data_root, tmp_path):
    """What the CPU count stands for, checked by CUDA itself: a bf16 training step with jitter, on the
    renderer's GPU path, makes no synchronizing CUDA call (``set_sync_debug_mode("error")`` raises)."""
    tr = Trainer(_cfg(data_root, tmp_path, device="cuda", threads=None))
    batch = next(tr.batches())
    tr.train_step(batch)  # the first step makes the optimizer state and warms the caches
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stats = tr.train_step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(stats["loss"])


def test_chroma_mse_is_the_colour_part_of_the_mse():
    """``mse + w * chroma_mse`` weights the colour part of an RGB error by 1 + w: a gray error costs no
    chroma, a pure colour error costs all of it; the parts add up to the plain MSE (float64 truth)."""
    from lrm_fast.train.losses import chroma_mse

    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 7, 3, generator=g, dtype=torch.float64)
    gray = target + torch.rand(2, 3, 7, 1, generator=g, dtype=torch.float64)      # same shift in every channel
    assert float(chroma_mse(gray, target)) < 1e-12
    d = torch.randn(2, 3, 7, 3, generator=g, dtype=torch.float64)
    pred = target + d
    mean_part = 3 * d.mean(-1).square().mean() / 3
    assert float(chroma_mse(pred, target) + mean_part) == pytest.approx(float((pred - target).square().mean()))
    gray_ball = torch.full((1, 3), 0.4, dtype=torch.float64)                     # the demo model's red ball
    red_ball = torch.tensor([[0.47, 0.12, 0.05]], dtype=torch.float64)
    assert float(chroma_mse(gray_ball, red_ball)) > 0.02


def test_chroma_weight_trains_and_logs(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path, steps=2, chroma_weight=5.0)
    Trainer(cfg).fit()
    log = [json.loads(x) for x in open(tmp_path / "log.jsonl")]
    assert "chroma" in log[1] and log[1]["loss"] >= log[1]["mse"]
    with pytest.raises(ValueError, match="chroma_weight must be >= 0"):
        TrainConfig.from_dict({"chroma_weight": -1})
