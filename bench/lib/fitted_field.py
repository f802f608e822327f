"""A realistic field to benchmark on: a preset's triplane and field MLP fitted to one synthetic object of
the data generator (``lrm_fast/data/synthetic.py``). Two fixtures, one per field family (``FITS``):

* ``base``: OpenLRM's field, the base preset's triplane (3 x 48 x 64 x 64), 4-layer ReLU MLP,
  softplus density;
* ``triposr``: TripoSR's field, its preset's triplane (3 x 40 x 64 x 64), 10-layer SiLU MLP, exp
  density, the radius-0.87 box (the object, inside the ball of radius 0.8, fits in it).

Random weights have no empty space and no surface, so they hide what empty-space skipping and
coarse-to-fine meshing are worth. This fixture stands in for a trained model's output: a density
that is ~0 outside the object and high inside, with the object's colours on its surface.

Object: ``random_object(object_rng(16, 4), DEMO_RECIPE)`` -- a striped cone, a striped torus and a
checkered box, all inside the ball of radius 0.8. Supervision uses the generator's exact primitives:

* occupancy: the closed-form inside test of each primitive in its own frame (``inside``); points
  uniform in the box and near the surface (ray-cast hits jittered along the ray). The raw density
  is pushed above the fit's ``raw_in`` inside and below ``raw_out`` outside (squared hinge losses,
  inside and outside weighted equally), i.e. activated densities ``softplus(raw - 1)`` of about 19
  inside (base) or ``exp(raw - 1)`` of about 1100 (triposr: opaque within a sample or two at its
  fixed delta 1/128, above its mesh level 25), and under 0.02 outside (both);
* colour: the generator's own shaded colour (``cast_rays``: albedo x Lambert, view-independent) at
  the ray-cast surface hits of random cameras and just inside them along the ray.

Adam, ``STEPS`` steps, fixed seeds, one thread (deterministic on one machine); a few minutes on
one CPU core. Stored as fp16 safetensors (~1 MB each) with the fit's facts in its metadata (PSNR of
our renderer, with the preset's own sampler, against the generator's renders at 3 views). Regenerate:

    python -m bench.lib.fitted_field --out bench/lib/fixtures/fitted_field.safetensors
    python -m bench.lib.fitted_field --preset triposr --out bench/lib/fixtures/fitted_field_triposr.safetensors

Use: ``planes, model = load_fitted_field()`` (``preset="triposr"`` for TripoSR's); ``model`` has
``cfg`` (the preset's ``LRMConfig``), ``field`` and ``renderer``, so
``lrm_fast.mesh.extract_mesh(model, planes)`` and ``model.renderer(planes, c2w, K, res)`` work as on a
real ``LRM``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from torch import nn

from lrm_fast.config import LRMConfig
from lrm_fast.data import synthetic as syn
from lrm_fast.model.camera import default_intrinsics, orbit_cameras
from lrm_fast.field.triplane import TriplaneField
from lrm_fast.render.renderer import Renderer

_FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
# per preset: its fixture file, the hinge targets of the raw density inside / outside and whether the
# MLP starts from TripoSR's own initialisation (``NeRFMLP``: kaiming uniform for ReLU; torch's default
# shrinks the signal through its 10 layers and the fit crawls)
FITS = {"base": dict(fixture=os.path.join(_FIXTURES, "fitted_field.safetensors"), raw_in=20.0, raw_out=-3.0,
                     kaiming=False),
        "triposr": dict(fixture=os.path.join(_FIXTURES, "fitted_field_triposr.safetensors"), raw_in=8.0,
                        raw_out=-3.0, kaiming=True)}
FIXTURE = FITS["base"]["fixture"]
SEED, INDEX = 16, 4                 # the object: object_rng(SEED, INDEX) under DEMO_RECIPE
STEPS = 500
EVAL_VIEWS = ((30.0, 20.0), (150.0, 10.0), (270.0, 35.0))   # (azimuth, elevation) degrees, distance 2
EVAL_RES = 128


def fitted_object() -> list:
    """The primitives of the fixture's object (the data generator's own draw)."""
    r = syn.DEMO_RECIPE
    return syn.random_object(syn.object_rng(SEED, INDEX), r.max_primitives, r.radius)


def inside(prims: list, pts: np.ndarray) -> np.ndarray:
    """Occupancy ``[N]`` bool of world points ``[N, 3]``: inside any primitive (closed-form, local frame)."""
    occ = np.zeros(pts.shape[0], bool)
    for p in prims:
        q = (pts - p.center) @ p.rot          # local = R^T (x - c)
        s = p.size
        if p.kind == "sphere":
            o = (q * q).sum(-1) <= s[0] ** 2
        elif p.kind == "box":
            o = (np.abs(q) <= s).all(-1)
        elif p.kind == "cylinder":
            o = (q[:, 0] ** 2 + q[:, 1] ** 2 <= s[0] ** 2) & (np.abs(q[:, 2]) <= s[1])
        elif p.kind == "cone":   # apex at z = +h, base radius r at z = -h (as synthetic._hit_cone)
            k2 = (s[0] / (2 * s[1])) ** 2
            o = (np.abs(q[:, 2]) <= s[1]) & (q[:, 0] ** 2 + q[:, 1] ** 2 <= k2 * (s[1] - q[:, 2]) ** 2)
        elif p.kind == "torus":
            o = syn._torus_sdf(q, s[0], s[1]) <= 0
        else:
            raise ValueError(f"unknown primitive kind {p.kind!r}")
        occ |= o
    return occ


def _surface_samples(prims, rng: np.random.Generator, n_views: int, res: int):
    """Ray-cast surface hits of random cameras all around: (hit points, ray dirs, shaded rgb)."""
    c2w = syn.random_cameras(rng, n_views, (1.8, 2.6), (-70.0, 80.0))
    o, d = syn.camera_rays(c2w, 0.75, res, res)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    rgb, alpha, depth = syn.cast_rays(prims, o, d)
    hit = alpha > 0
    return o[hit] + depth[hit, None] * d[hit], d[hit], rgb[hit]


class FittedField(nn.Module):
    """What ``extract_mesh``, the renderer and ``Reconstruction.render`` need of a model: ``cfg``, ``field``,
    ``renderer``, ``render``."""

    def __init__(self, cfg: LRMConfig):
        super().__init__()
        self.cfg = cfg
        self.field = TriplaneField(cfg.triplane.channels, cfg.field)
        self.renderer = Renderer(cfg.render, self.field)

    def render(self, planes, c2w, intrinsics, height, width=None, **kwargs):
        """As ``LRM.render``: the renderer's views of ``planes``."""
        return self.renderer(planes, c2w, intrinsics, height, width, **kwargs)

    def set_backend(self, backend: str) -> "FittedField":
        for m in (self.field, self.renderer):
            m.backend = backend
        return self


def eval_views(prims, planes: torch.Tensor, model: FittedField, res: int = EVAL_RES):
    """PSNR (dB) per view of our renderer (the model's render settings, white background) against the
    generator's exact ray-cast renders composited on white; also returns both image stacks."""
    az, el = zip(*EVAL_VIEWS)
    c2w = orbit_cameras(list(az), list(el), 2.0)
    rgba, _ = syn.render_object(prims, c2w.double().numpy(), res, 0.75)
    truth = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
    K = default_intrinsics(0.75).expand(1, len(az), 4)
    with torch.inference_mode():
        out = model.renderer(planes, c2w[None], K, res, background=1.0)
    ours = out["rgb"][0].clamp(0, 1).float().numpy()
    mse = ((ours - truth) ** 2).reshape(len(az), -1).mean(-1)
    return [float(10 * np.log10(1.0 / max(m, 1e-12))) for m in mse], ours, truth


def _fit_of(preset: str) -> dict:
    if preset not in FITS:
        raise ValueError(f"no fitted field for preset {preset!r} ({', '.join(FITS)})")
    return FITS[preset]


def fit(steps: int = STEPS, log_every: int = 50, verbose: bool = True, preset: str = "base"):
    """Fit planes + field MLP of ``preset`` (``FITS``) to the object. Returns (planes [1, 3, C, H, W] fp32,
    model, facts dict)."""
    raw_in, raw_out = _fit_of(preset)["raw_in"], _fit_of(preset)["raw_out"]
    torch.manual_seed(SEED)
    rng = np.random.default_rng([SEED, INDEX, 1])
    cfg = LRMConfig.preset(preset)
    tp = cfg.triplane
    prims = fitted_object()
    model = FittedField(cfg)
    if _fit_of(preset)["kaiming"]:
        for lin in model.field.linears:
            nn.init.kaiming_uniform_(lin.weight, nonlinearity="relu")
    model.set_backend("auto")   # the fast CPU field has its backward too
    planes = nn.Parameter(0.1 * torch.randn(1, 3, tp.channels, tp.high_res, tp.high_res))
    hits, dirs, cols = _surface_samples(prims, rng, 48, 96)
    t0 = time.perf_counter()
    opt = torch.optim.Adam([{"params": [planes], "lr": 3e-2},
                            {"params": model.field.parameters(), "lr": 3e-3}])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=1e-4)
    n_uni, n_near, n_col = 4096, 6144, 4096
    for step in range(steps):
        # occupancy samples: uniform in the box + near the surface (hits jittered along their ray)
        i = rng.integers(0, hits.shape[0], n_near)
        near = hits[i] + rng.normal(0, 0.04, (n_near, 1)) * dirs[i]
        uni = rng.uniform(cfg.render.box_min, cfg.render.box_max, (n_uni, 3))
        pts_d = np.concatenate([uni, near]).astype(np.float32)
        occ = torch.from_numpy(inside(prims, pts_d))
        # colour samples: surface hits and up to 0.04 inside along the ray
        j = rng.integers(0, hits.shape[0], n_col)
        pts_c = (hits[j] + rng.uniform(0, 0.04, (n_col, 1)) * dirs[j]).astype(np.float32)
        pts = torch.from_numpy(np.concatenate([pts_d, pts_c]))[None]
        raw = model.field(planes, pts)[0]
        sig = raw[: pts_d.shape[0], 0]
        # squared hinges, inside and outside weighted equally (inside is ~10% of the box)
        loss_d = ((torch.relu(raw_in - sig[occ]) / raw_in).pow(2).mean()
                  + (torch.relu(sig[~occ] - raw_out) / raw_in).pow(2).mean())
        rgb = model.field.rgb(raw[pts_d.shape[0]:])
        loss_c = ((rgb - torch.from_numpy(cols[j])) ** 2).mean()
        loss = loss_d + 10 * loss_c
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if verbose and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:4d}  density {loss_d.item():.4f}  colour mse {loss_c.item():.5f}  "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    fit_s = time.perf_counter() - t0
    planes = planes.detach()
    model.set_backend("auto")
    facts = {"preset": preset, "object": f"synthetic.random_object(object_rng({SEED}, {INDEX}), DEMO_RECIPE)",
             "primitives": [f"{p.kind}/{p.texture}" for p in prims], "steps": steps,
             "fit_seconds": round(fit_s, 1), "final_density_loss": loss_d.item(),
             "final_colour_mse": loss_c.item()}
    return planes, model, facts


def save_fixture(path: str, planes: torch.Tensor, model: FittedField, facts: dict) -> None:
    """fp16 safetensors, written to a temporary file and renamed (atomic)."""
    from safetensors.torch import save_file

    tensors = {"planes": planes.half().contiguous()}
    tensors.update({f"field.{k}": v.detach().half().contiguous() for k, v in model.field.state_dict().items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata={"facts": json.dumps(facts), "preset": model.cfg.name})
    os.replace(tmp, path)


def fixture_facts(path: str | None = None, preset: str = "base") -> dict:
    from safetensors import safe_open

    path = _fit_of(preset)["fixture"] if path is None else path
    with safe_open(path, "pt") as f:
        return json.loads(f.metadata()["facts"])


def load_fitted_field(path: str | None = None, device=None, dtype=torch.float32, preset: str = "base"):
    """(planes ``[1, 3, C, 64, 64]``, ``FittedField`` model) of the stored fixture of ``preset``
    (``FITS``; C = 48 base, 40 triposr), in ``dtype``.

    The fp16 stored values are the fixture (they were rendered for the stated PSNR after the same
    fp16 round trip)."""
    from safetensors.torch import load_file

    path = _fit_of(preset)["fixture"] if path is None else path
    if not os.path.exists(path):
        flag = "" if preset == "base" else f" --preset {preset}"
        raise FileNotFoundError(f"fitted-field fixture {path} not found; regenerate it with "
                                f"python -m bench.lib.fitted_field{flag} --out {path}")
    t = load_file(path)
    if "planes" not in t:
        raise KeyError(f"{path}: no 'planes' tensor (keys {sorted(t)[:6]}...)")
    cfg = LRMConfig.preset(preset)
    model = FittedField(cfg)
    want = (1, 3, cfg.triplane.channels, cfg.triplane.high_res, cfg.triplane.high_res)
    if tuple(t["planes"].shape) != want:
        raise ValueError(f"{path}: planes has shape {tuple(t['planes'].shape)}, the {preset} preset needs {want}")
    model.field.load_state_dict({k[len("field."):]: v.float() for k, v in t.items() if k.startswith("field.")})
    model.to(device=device, dtype=dtype).eval()
    return t["planes"].to(device=device, dtype=dtype), model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="base", choices=sorted(FITS), help="whose field (default: %(default)s)")
    ap.add_argument("--out", default=None, help="safetensors file to write (default: the preset's fixture)")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: deterministic, modest CPU)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = _fit_of(args.preset)["fixture"] if args.out is None else args.out
    planes, model, facts = fit(args.steps, preset=args.preset)
    # evaluate what is stored: the fp16 round trip
    planes16 = planes.half().float()
    model.field.load_state_dict({k: v.half().float() for k, v in model.field.state_dict().items()})
    psnr, _, _ = eval_views(fitted_object(), planes16, model)
    facts["eval_views_az_el"] = [list(v) for v in EVAL_VIEWS]
    facts["eval_resolution"] = EVAL_RES
    facts["psnr_db"] = [round(p, 2) for p in psnr]
    save_fixture(out, planes, model, facts)
    print(json.dumps(facts, indent=1))
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
