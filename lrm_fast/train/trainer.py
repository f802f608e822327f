"""The trainer: AdamW + warmup/cosine, grad clipping, mixed precision, DDP, atomic resumable checkpoints.

Determinism is by construction rather than by saved RNG streams: the items of step ``s`` are a pure
function of ``(seed, s)`` (epoch permutation from ``(seed, epoch)``, item sampling from
``(seed, epoch, index)``), and the renderer's jitter uses a generator seeded from ``(seed, s, rank)``.
So ``--resume`` after a kill replays exactly the losses of an uninterrupted run (model, optimizer,
scheduler, GradScaler and the global RNG states are restored too). With torchrun, rank ``r`` of
``W`` takes items ``r, r+W, ...`` of each global batch; DDP averages gradients, so the update equals
the one-process update of the same global batch (exactly so when ``jitter`` is off, which makes the
render noise independent of how the batch is split).

Checkpoints (``<out>/checkpoint/last.pt``, written to a temp file and renamed) every ``ckpt_every``
steps, at the end, on SIGTERM/SIGINT and when ``max_minutes`` is reached; each also exports the
model (``<out>/model/``: ``model.safetensors`` + ``config.json``, loadable by ``load_model``).
The log is ``<out>/log.jsonl``: one JSON object per ``log_every`` steps (loss, mse, psnr, lr,
items/s, peak memory) plus ``start``/``checkpoint``/``end`` events, and ``heldout`` events every
``eval_every`` steps (``heldout.py``: held-out PSNR, also shown on the progress bar). A step reads
nothing on the host: the logged means are summed on the device and read once per ``log_every`` steps
(``read_host``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..dist import dist_info as _dist_info, resolve_device  # noqa: F401 (resolve_device: re-exported)
from .config import TrainConfig
from .heldout import heldout_progress
from .losses import LPIPSLoss, chroma_mse, psnr


# ------------------------------------------------------------------------------------------------
# schedule, batches, distributed helpers


def lr_lambda(warmup: int, total: int, min_ratio: float):
    """Linear warmup from 0 over ``warmup`` steps, then cosine from 1 down to ``min_ratio``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return f


def batch_indices(step: int, n: int, batch: int, seed: int) -> tuple[int, list[int]]:
    """(epoch, dataset indices) of global batch ``step``: epochs are seeded permutations, the last
    partial batch of an epoch is dropped (so every batch has ``batch`` items)."""
    per_epoch = n // batch
    if per_epoch == 0:  # fewer objects than the batch: sample with a fresh permutation per step
        rng = np.random.default_rng([seed, step, 7])
        return step, [int(i) for i in rng.choice(n, batch, replace=True)]
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return epoch, [int(i) for i in perm[pos * batch:(pos + 1) * batch]]


class StepBatches(torch.utils.data.Dataset):
    """Item ``k`` = this rank's share of global batch ``start + k`` (for a DataLoader with workers)."""

    def __init__(self, ds, cfg: TrainConfig, start: int, rank: int, world: int):
        self.ds, self.cfg, self.start, self.rank, self.world = ds, cfg, start, rank, world

    def __len__(self) -> int:
        return max(0, self.cfg.steps - self.start)

    def __getitem__(self, k: int) -> dict:
        from ..data.openlrm import collate

        epoch, idx = batch_indices(self.start + k, len(self.ds), self.cfg.batch_size, self.cfg.seed)
        self.ds.set_epoch(epoch)
        return collate([self.ds[i] for i in idx[self.rank::self.world]])


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _atomic_torch_save(obj, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "python": random.getstate(),
          "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    name, keys, *rest = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def export_model(model, out_dir: str, dtype: torch.dtype | None = None) -> None:
    """``model.safetensors`` + ``config.json`` (our checkpoint format, atomic) loadable by ``load_model``."""
    from ..io.checkpoint import save_checkpoint

    save_checkpoint(model, out_dir, dtype)


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: weight decay on matrices only (not on vectors, ``pos_embed`` or any parameter
    whose name holds "norm", which includes the adaLN modulation MLPs ``normN.mlp``), and the lr of
    each top-level module times ``cfg.lr_scale[module]`` (default 1). Only non-empty groups. A
    resumed checkpoint must use the same ``lr_scale`` (its optimizer state has these groups)."""
    names = {n for n, _ in model.named_children()} | {n for n, _ in model.named_parameters(recurse=False)}
    unknown = sorted(set(cfg.lr_scale) - names)
    if unknown:
        raise ValueError(f"lr_scale names {unknown} are not modules of the model ({sorted(names)})")
    groups: dict = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (p.dim() < 2 or "pos_embed" in name or "norm" in name)
        scale = float(cfg.lr_scale.get(name.split(".")[0], 1.0))
        groups.setdefault((scale != 1.0, scale, not decay), []).append(p)
    # lr 1 first, decay before no decay: a config without lr_scale builds the two groups it always had
    return [{"params": groups[k], "weight_decay": 0.0 if k[2] else cfg.weight_decay, "lr": cfg.lr * k[1]}
            for k in sorted(groups)]


def read_host(t: torch.Tensor) -> list[float]:
    """The values of a small device tensor on the host: the trainer's only host sync, once per
    ``log_every`` steps (one copy for all the logged stats; tests count its calls)."""
    return t.detach().cpu().tolist()


def compile_options(device: torch.device) -> dict:
    """``torch.compile`` arguments of the trainer's forward (``TrainConfig.compile``): CUDA graphs on a
    GPU (``"reduce-overhead"``: the step's hundreds of small launches replayed as one graph; the
    exact render has static shapes), inductor's default mode elsewhere."""
    return {"mode": "reduce-overhead"} if device.type == "cuda" else {}


class _StopVote:
    """Every rank stops at the same step when any rank wants to (a signal, ``max_minutes``), without a
    host sync per step: the vote of step ``s`` is summed over ranks and copied to the host while step
    ``s + 1`` runs, and read after it (a stop lands one step late). On CPU (gloo) the copy is free."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pending = None  # (the summed vote on its way to the host, the event that says it is there)

    def step(self, wants_stop: bool) -> bool:
        stop = False
        if self.pending is not None:
            votes, done = self.pending
            if done is not None:
                done.synchronize()  # queued a step ago: the device has moved on to this step's work
            stop = bool(votes[0] > 0)
        flag, done = torch.tensor([float(wants_stop)]), None
        if self.device.type == "cuda":  # (a copy from pageable memory would wait for the device)
            flag = flag.pin_memory().to(self.device, non_blocking=True)
        torch.distributed.all_reduce(flag)
        if self.device.type == "cuda":
            flag, done = flag.to("cpu", non_blocking=True), torch.cuda.Event()
            done.record()
        self.pending = (flag, done)
        return stop


# ------------------------------------------------------------------------------------------------


class Trainer:
    """``Trainer(cfg).fit()``. Works in one process or under torchrun (env ``WORLD_SIZE > 1``)."""

    def __init__(self, cfg: TrainConfig, resume: bool | str = False):
        from ..data.openlrm import MultiViewDataset
        from ..model.lrm import LRM

        self.cfg = cfg
        # the thread count the caller had: fit() gives it back when it ends (a library call must not
        # leave the process at cfg.threads; tests after a 1-thread DDP run summed differently)
        self._threads_before = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        self.rank, self.world, local = _dist_info()
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() and cfg.device != "cpu"
                                                 else "gloo")
        self.device = resolve_device(cfg.device, local, torch.cuda.is_available())
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if cfg.batch_size % self.world:
            raise ValueError(f"global batch_size {cfg.batch_size} is not divisible by {self.world} processes")

        prec = cfg.precision
        if prec == "auto":
            prec = "bf16" if self.device.type == "cuda" else "fp32"
        self.precision = prec
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=prec == "fp16")

        torch.manual_seed(cfg.seed)
        self.model_cfg = cfg.model_config()
        model = LRM(self.model_cfg, backend=cfg.backend)
        if cfg.init_from:
            from ..io.checkpoint import read_state_dict, upgrade_state_dict

            sd = upgrade_state_dict(read_state_dict(os.path.join(cfg.init_from, "model.safetensors")))
            # (old files' ``renderer.field.*`` copies of the field: dropped by the io rule)
            missing, unexpected = model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
            if missing or unexpected:
                raise ValueError(f"{cfg.init_from}: weights do not match: missing {missing[:6]}, "
                                 f"unexpected {unexpected[:6]}")
        # train-time sample count without touching the saved config
        if cfg.train_samples_per_ray:
            model.renderer.cfg = dataclasses.replace(model.renderer.cfg, samples_per_ray=cfg.train_samples_per_ray)
        model.check_cameras = False  # (a host sync per step; load_pose checked the dataset's poses)
        self.model = model.to(self.device)
        self.ddp = (torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.world > 1 else self.model)
        if cfg.compile:
            self.ddp = torch.compile(self.ddp, **compile_options(self.device))
        self._generator = torch.Generator(device=self.device)

        # fused: one kernel per group, and the step counts live on the parameters' device, so a step reads
        # nothing on the host (the default CPU loop and CUDA's foreach loop read each step count with .item())
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg), lr=cfg.lr, betas=tuple(cfg.betas),
                                           fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg.warmup, cfg.steps, cfg.min_lr_ratio))

        self.lpips = None
        if cfg.lpips_weight > 0:
            self.lpips = LPIPSLoss(cfg.lpips_net, cfg.lpips_weights, cfg.lpips_random).to(self.device)

        src = cfg.source_size or self.model_cfg.encoder.image_size
        enc = self.model_cfg.encoder
        self.dataset = MultiViewDataset(cfg.data_root, cfg.data_meta, cfg.side_views, src, cfg.render_size,
                                        cfg.patch, cfg.seed, backgrounds=cfg.backgrounds,
                                        camera_feature=self.model_cfg.camera.feature,
                                        distance=self.model_cfg.camera.source_distance,
                                        source_views=cfg.source_views,
                                        source_background=self.model_cfg.input_background,
                                        foreground_ratio=enc.foreground_ratio)
        self.step = 0
        self.out = cfg.out_dir
        self.ckpt_path = os.path.join(self.out, "checkpoint", "last.pt")
        if resume:
            self.load(resume if isinstance(resume, str) else self.ckpt_path)
        self._stop = None
        self._t_start = None

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "step": self.step, "rng": _rng_state(), "train_config": self.cfg.to_dict(),
                "model_config": self.model_cfg.to_dict(), "skipped": self.dataset.skipped}

    def save(self, reason: str = "periodic") -> None:
        if self.rank == 0:
            from ..io.checkpoint import save_checkpoint

            os.makedirs(os.path.dirname(self.ckpt_path), exist_ok=True)
            _atomic_torch_save(self.state_dict(), self.ckpt_path)
            export_model(self.model, os.path.join(self.out, "model"), getattr(torch, self.cfg.export_dtype))
            self._log({"event": "checkpoint", "step": self.step, "reason": reason, "path": self.ckpt_path})
        if self.world > 1:
            torch.distributed.barrier()

    def load(self, path: str) -> None:
        if not os.path.exists(path):
            raise FileNotFoundError(f"cannot resume: checkpoint not found: {path}")
        st = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("model", "optimizer", "scheduler", "scaler", "step", "rng"):
            if key not in st:
                raise KeyError(f"{path}: not a trainer checkpoint (missing {key!r})")
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        self.step = int(st["step"])
        _set_rng_state(st["rng"])

    # -- logging ---------------------------------------------------------------------------------
    def _log(self, rec: dict) -> None:
        if self.rank != 0:
            return
        os.makedirs(self.out, exist_ok=True)
        with open(os.path.join(self.out, "log.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")

    # -- one step ---------------------------------------------------------------------------------
    def loss_fn(self, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        dev = self.device
        b = {k: (v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        gen = None
        if cfg.jitter:
            seed = cfg.seed * 1_000_003 + step * 1009 + self.rank
            if cfg.compile:  # torch.compile does not trace a generator: the device's default one, seeded alike
                (torch.cuda.manual_seed if dev.type == "cuda" else torch.manual_seed)(seed)
            else:
                gen = self._generator
                gen.manual_seed(seed)
        with torch.autocast(dev.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out = self.ddp(b["source_image"], b["source_camera"], b["c2w"], b["intrinsics"], cfg.render_size,
                           pixels=b["pixels"], background=b["bg"], jitter=cfg.jitter, generator=gen)
        pred = out["rgb"].float()                                           # [B, V, R, 3]
        mse = F.mse_loss(pred, b["rgb"])
        loss = mse
        stats = {"mse": mse.detach(), "psnr": psnr(pred.detach(), b["rgb"])}
        if self.lpips is not None:
            B, V, R, _ = pred.shape
            P = cfg.patch or cfg.render_size
            to_img = lambda x: x.reshape(B * V, P, P, 3).permute(0, 3, 1, 2)  # noqa: E731
            lp = self.lpips(to_img(pred), to_img(b["rgb"]))
            loss = loss + cfg.lpips_weight * lp
            stats["lpips"] = lp.detach()
        if cfg.mask_weight > 0:
            m = F.mse_loss(out["opacity"].float(), b["alpha"])
            loss = loss + cfg.mask_weight * m
            stats["mask"] = m.detach()
        if cfg.chroma_weight > 0:
            c = chroma_mse(pred, b["rgb"])
            loss = loss + cfg.chroma_weight * c
            stats["chroma"] = c.detach()
        stats["loss"] = loss.detach()
        return loss, stats

    def train_step(self, batch: dict) -> dict:
        self.model.train()
        loss, stats = self.loss_fn(batch, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        if self.cfg.time_schedule and self.cfg.max_minutes and self._t_start is not None:
            # the cosine runs over the wall budget instead of ``steps`` (a run with a time budget and an
            # unknown step rate still ends at min_lr); warmup stays in steps
            frac = min(1.0, (time.perf_counter() - self._t_start) / (60.0 * self.cfg.max_minutes))
            f = lr_lambda(self.cfg.warmup, 10 ** 9, self.cfg.min_lr_ratio)(self.step)
            if self.step >= self.cfg.warmup:
                f = self.cfg.min_lr_ratio + (1 - self.cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
            for g in self.optimizer.param_groups:
                g["lr"] = g["initial_lr"] * f
        stats["grad_norm"] = gnorm.detach()
        if self.world > 1:  # log the global-batch mean, not this rank's half
            keys = sorted(k for k in stats if k != "grad_norm")
            vec = torch.stack([stats[k].float() for k in keys]).to(self.device)
            torch.distributed.all_reduce(vec)
            stats.update({k: v / self.world for k, v in zip(keys, vec)})
        return stats

    def batches(self):
        loader = torch.utils.data.DataLoader(StepBatches(self.dataset, self.cfg, self.step, self.rank, self.world),
                                             batch_size=None, shuffle=False, num_workers=self.cfg.num_workers,
                                             persistent_workers=False,
                                             # pinned: loss_fn's non_blocking copies then do not wait for the GPU
                                             pin_memory=self.device.type == "cuda")
        return iter(loader)

    # -- the loop -----------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        self._stop = signal.Signals(signum).name

    def fit(self) -> dict:
        cfg = self.cfg
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        lp_desc = self.lpips.describe() if self.lpips is not None else "off (lpips_weight = 0)"
        counts = self.model.parameter_counts()
        self._log({"event": "start", "step": self.step, "device": str(self.device), "world": self.world,
                   "precision": self.precision, "lpips": lp_desc, "params": counts["total"],
                   "trainable": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
                   "objects": len(self.dataset), "config": cfg.to_dict()})
        if self.rank == 0:
            print(f"training {self.model_cfg.name}: {counts['total'] / 1e6:.2f}M params, {self.precision}, "
                  f"{self.device}, world {self.world}, LPIPS: {lp_desc}", flush=True)
        bar = None
        if cfg.progress and self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", mininterval=5)
        t_start = self._t_start = time.perf_counter()
        t_log, n_items, acc, n_acc = time.perf_counter(), 0, {}, 0
        last = {}
        vote = _StopVote(self.device) if self.world > 1 else None
        try:
            for batch in self.batches():
                stats = self.train_step(batch)
                n_items += batch["source_image"].shape[0] * self.world
                # summed on the device: the host reads them once per log_every steps, not once per step
                for k, v in stats.items():
                    acc[k] = acc[k] + v.float() if k in acc else v.float()
                n_acc += 1
                if bar is not None:
                    bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    dt = time.perf_counter() - t_log
                    last = dict(zip(acc, read_host(torch.stack(list(acc.values())) / n_acc)))
                    self._log({"step": self.step, **last, "lr": self.optimizer.param_groups[0]["lr"],
                               "items_per_s": n_items / max(dt, 1e-9), "s_per_step": dt / n_acc,
                               "peak_mem_mb": _peak_memory_mb(self.device), "skipped": self.dataset.skipped,
                               "elapsed_s": time.perf_counter() - t_start})
                    if bar is not None:  # the last logged means (a per-step value would cost a read)
                        bar.set_postfix(loss=f"{last['loss']:.4f}", psnr=f"{last['psnr']:.1f}", refresh=False)
                    t_log, n_items, acc, n_acc = time.perf_counter(), 0, {}, 0
                heldout_progress(self, bar)
                out_of_time = cfg.max_minutes is not None and time.perf_counter() - t_start > 60 * cfg.max_minutes
                wants_stop = self._stop is not None or out_of_time
                stop_now = vote.step(wants_stop) if vote is not None else wants_stop
                if stop_now:
                    self.save(self._stop or "max_minutes")
                    break
                if self.step % cfg.ckpt_every == 0 and self.step < cfg.steps:
                    self.save()
            else:
                self.save("end")
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if bar is not None:
                bar.close()
            if torch.get_num_threads() != self._threads_before:
                torch.set_num_threads(self._threads_before)
        self._log({"event": "end", "step": self.step, "reason": self._stop or "done",
                   "elapsed_s": time.perf_counter() - t_start})
        return {"step": self.step, **last}


def train(cfg: TrainConfig, resume: bool | str = False) -> dict:
    trainer = Trainer(cfg, resume)
    try:
        return trainer.fit()
    finally:
        if trainer.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
