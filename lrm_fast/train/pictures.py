"""Pictures of a model (the README's and the model card's), and loss curves of training logs.

    python -m lrm_fast.train.pictures MODEL OUT.png [--recipe rich]   # sample, ball on box, 2 held-out objects
    python -m lrm_fast.train.pictures --curves OUT.png LOG.jsonl [LOG.jsonl ...]

One row per object: the input image, 4 novel views rendered by the model next to the exact ground
truth, and a
render of the mesh that ``rec.mesh()`` would export (marching cubes of the same density at the
model's threshold, vertex colors from the field), drawn with a z-sorted flat-shaded rasterizer so
nothing beyond numpy/PIL/scikit-image is needed. Curves need matplotlib (imported only there).
The objects: the shipped sample (a PNG, no ground truth), the same scene built from primitives
(``data.synthetic.ball_on_box``: a red ball on a blue box, with ground truth and each part's mean
colour, model vs truth, in the row's title and on stdout: ``evaluate.part_colours``), and held-out
objects of the evaluation's seed drawn from ``recipe``.
Everything runs on CPU too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

from ..api import load_model
from ..data.synthetic import EVAL_RECIPES, LIGHT_DIR, ball_on_box, canonical_c2w, look_at_np, render_object
from ..io.export import atomic_path
from ..mesh import density_grid, marching_cubes
from .evaluate import IN_SEED, heldout_object, part_colours, part_masks, source_image

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "sample.png")
VIEW_AZ = (45.0, 135.0, 225.0, 315.0)
VIEW_EL = (20.0, 10.0, 30.0, 0.0)


def orbit_c2w(az, el, distance: float = 2.2) -> np.ndarray:
    """c2w ``[V, 4, 4]``, azimuth 0 = the canonical source view (camera on -y)."""
    a, e = np.radians(np.asarray(az, float)), np.radians(np.asarray(el, float))
    pos = distance * np.stack([np.cos(e) * np.sin(a), -np.cos(e) * np.cos(a), np.sin(e)], -1)
    return look_at_np(pos)


@torch.inference_mode()
def mesh_arrays(model, planes: torch.Tensor, resolution: int = 96):
    """(vertices ``[N, 3]``, faces ``[F, 3]``, colors ``[N, 3]`` in [0, 1]) of one triplane, or None when
    the density never crosses the model's mesh threshold."""
    rc = model.cfg.render
    field = model.field
    planes = planes.float()

    def density(pts):
        return field.density(field(planes, pts[None])[..., 0].float())[0]

    grid, _ = density_grid(density, resolution, rc.box_min, rc.box_max, rc.mesh_threshold, planes.device)
    try:
        verts, faces = marching_cubes(grid, rc.mesh_threshold, rc.box_min, rc.box_max)
    except ValueError:
        return None
    v = torch.from_numpy(verts).to(planes.device)
    rgb = field.rgb(field(planes, v[None]).float())[0].clamp(0, 1).cpu().numpy()
    return verts, faces, rgb


def draw_mesh(verts, faces, colors, c2w: np.ndarray, focal: float = 0.75, size: int = 128, ss: int = 2) -> np.ndarray:
    """Flat-shaded, depth-sorted (painter's) render of a mesh seen from ``c2w`` (OpenGL) on white:
    ``[size, size, 3]`` uint8 (PIL only; ``ss``x supersampled)."""
    from PIL import Image, ImageDraw

    S = size * ss
    w2c = np.linalg.inv(c2w)
    cam = verts @ w2c[:3, :3].T + w2c[:3, 3]
    z = np.maximum(-cam[:, 2], 1e-6)
    px = np.stack([(cam[:, 0] / z) * focal * S + S / 2, S / 2 - (cam[:, 1] / z) * focal * S], -1)
    p = verts[faces]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
    front = (n * (c2w[:3, 3] - p.mean(1))).sum(-1) > 0
    shade = 0.35 + 0.65 * np.clip(np.abs(n @ LIGHT_DIR), 0, 1)
    fc = (np.clip(colors[faces].mean(1) * shade[:, None], 0, 1) * 255 + 0.5).astype(np.uint8)
    img = Image.new("RGB", (S, S), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    idx = np.flatnonzero(front)
    idx = idx[np.argsort(-z[faces[idx]].mean(1))]
    tri = px[faces]
    for f in idx:
        draw.polygon([tuple(v) for v in tri[f]], fill=tuple(int(c) for c in fc[f]))
    return np.asarray(img.resize((size, size), Image.LANCZOS))


def _tile(img, size: int) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    if a.shape[0] != size:
        from PIL import Image

        a = np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR))
    return a[..., :3]


COLOUR_PERMUTATIONS = ((0, 1, 2), (2, 1, 0), (1, 2, 0))


def colour_response(model, resolution: int = 64) -> dict:
    """Does the model's colour follow the input's? The red ball on the blue box (``ball_on_box``)
    with its colours' channels permuted (red/blue ball, blue/red box, ...), each reconstructed and
    seen from the pictures' 4 side views; per part, the chroma of its mean colour (the colour less
    its gray, ``c - mean(c)``), model against truth. ``follow``: their mean cosine (1: the model's
    colours turn as the input's do; ~0: they ignore it); ``chroma_ratio``: mean |model chroma| /
    |true chroma| (0: gray). A model that learnt luminance only reads ``chroma_ratio`` ~0.01 here
    (``docs/demo/colour.md``); ``parts`` holds every part's colours."""
    import dataclasses

    p = next(model.parameters())
    focal = model.cfg.camera.source_focal
    K = torch.tensor([focal, focal, 0.5, 0.5], device=p.device)
    c2w = orbit_c2w(VIEW_AZ, VIEW_EL)
    cos, ratio, parts = [], [], []
    for perm in COLOUR_PERMUTATIONS:
        idx = list(perm)
        prims = [dataclasses.replace(q, color=q.color[idx], color2=q.color2[idx]) for q in ball_on_box()]
        rec = model.reconstruct(source_image(prims, 128, focal))
        out = rec.render((torch.from_numpy(c2w).float().to(p.device), K), resolution=resolution, background=1.0)
        pred = out["rgb"][0].float().clamp(0, 1).cpu().numpy()
        g = render_object(prims, c2w, resolution, focal)[0]
        gt = g[..., :3] * g[..., 3:] + (1 - g[..., 3:])
        for name, c in zip(("box", "ball"), part_colours(pred, gt, part_masks(prims, c2w, resolution, focal))):
            if not c["pixels"]:
                continue
            pc, tc = np.asarray(c["pred"]) - np.mean(c["pred"]), np.asarray(c["true"]) - np.mean(c["true"])
            cos.append(float(pc @ tc / max(np.linalg.norm(pc) * np.linalg.norm(tc), 1e-12)))
            ratio.append(float(np.linalg.norm(pc) / max(np.linalg.norm(tc), 1e-12)))
            parts.append({"permutation": idx, "part": name, "pred": c["pred"], "true": c["true"]})
    return {"follow": round(float(np.mean(cos)), 3), "chroma_ratio": round(float(np.mean(ratio)), 3), "parts": parts}


def make_pictures(model, out_path: str, objects: int = 2, seed: int = IN_SEED, resolution: int = 128,
                  mesh_resolution: int = 96, title: str | None = None, recipe: str = "demo") -> str:
    """The figure (see module docstring) -> ``out_path`` (PNG, atomic). PIL only. The ball-on-box
    part colours are printed too (one line per part)."""
    from PIL import Image, ImageDraw

    from ..io.images import load_image

    p = next(model.parameters())
    focal = model.cfg.camera.source_focal
    K = torch.tensor([focal, focal, 0.5, 0.5], device=p.device)
    rows = [("shipped sample", np.clip(np.rint(load_image(SAMPLE) * 255), 0, 255).astype(np.uint8), None)]
    bob = ball_on_box()
    rows.append(("red ball on blue box", source_image(bob, 128, focal), bob))
    for i in range(objects):
        prims, _ = heldout_object(seed, i, recipe=recipe)
        rows.append((f"held-out #{i} (recipe {recipe}, seed {seed})", source_image(prims, 128, focal), prims))
    c2w = orbit_c2w(VIEW_AZ, VIEW_EL)
    T, pad, head = resolution, 4, 14
    ncol = 2 + 2 * len(VIEW_AZ)
    top = head + (16 if title else 0)
    W, H = ncol * (T + pad) + pad, top + len(rows) * (T + head + pad)
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill=(0, 0, 0))
    blank = np.full((T, T, 3), 235, np.uint8)
    for r, (name, src, prims) in enumerate(rows):
        rec = model.reconstruct(src)
        out = rec.render((torch.from_numpy(c2w).float().to(p.device), K), resolution=T, background=1.0)
        pred = out["rgb"][0].float().clamp(0, 1).cpu().numpy()
        gt = None
        if prims is not None:
            g = render_object(prims, c2w, T, focal)[0]
            gt = g[..., :3] * g[..., 3:] + (1 - g[..., 3:])
        if prims is bob:
            parts = part_colours(pred, gt, part_masks(prims, c2w, T, focal))
            said = []
            for part, c in zip(("box", "ball"), parts):
                line = (f"{part}: model {tuple(c['pred'])} vs truth {tuple(c['true'])}, largest channel gap "
                        f"{c['error']}" if c["pixels"] else f"{part}: not visible")
                print(line)
                said.append(line.split(", largest")[0].replace(" vs truth", " / truth"))
            name = f"{name}: " + "; ".join(said)
        tiles = [(rec.inputs[0].permute(1, 2, 0).numpy(), "input")]
        for k in range(len(VIEW_AZ)):
            tiles.append((pred[k], f"model az {VIEW_AZ[k]:.0f}"))
            tiles.append((gt[k] if gt is not None else blank, "truth" if gt is not None else "(no truth)"))
        m = mesh_arrays(model, rec.triplane[:1], mesh_resolution)
        if m is not None:
            tiles.append((draw_mesh(*m, orbit_c2w([30.0], [20.0])[0], focal, T), f"mesh {len(m[1])} faces"))
        else:
            tiles.append((blank, "empty mesh"))
        y = top + r * (T + head + pad)
        draw.text((pad, y), name, fill=(0, 0, 0))
        for c, (img, label) in enumerate(tiles):
            x = pad + c * (T + pad)
            canvas.paste(Image.fromarray(_tile(img, T)), (x, y + head))
            if r == 0 or label not in ("truth",):
                draw.text((x + 2, y + head + T - 11), label, fill=(90, 90, 90))
    tmp = atomic_path(out_path)
    canvas.save(tmp, format="PNG")
    os.replace(tmp, out_path)
    return out_path


def read_log(path: str) -> list[dict]:
    with open(path) as f:
        return [r for r in (json.loads(line) for line in f if line.strip()) if "loss" in r]


def plot_curves(logs: dict, out_path: str, title: str | None = None) -> str:
    """Training PSNR and loss against wall time and step for ``{label: log.jsonl path}`` -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for label, path in logs.items():
        recs = read_log(path)
        if not recs:
            continue
        t = np.array([r.get("elapsed_s", np.nan) for r in recs]) / 60
        st = np.array([r["step"] for r in recs])
        ax[0].plot(t, [r["psnr"] for r in recs], label=label)
        ax[1].plot(st, [r["psnr"] for r in recs], label=label)
        ax[2].semilogy(t, [r["loss"] for r in recs], label=label)
    ax[0].set_xlabel("wall time (min)"), ax[0].set_ylabel("train PSNR (dB, patches, random bg)")
    ax[1].set_xlabel("step"), ax[1].set_ylabel("train PSNR (dB)")
    ax[2].set_xlabel("wall time (min)"), ax[2].set_ylabel("loss (MSE + mask)")
    for a in ax:
        a.grid(alpha=0.3)
    ax[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = atomic_path(out_path)
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, out_path)
    return out_path


def add_arguments(ap) -> None:
    ap.add_argument("model", help="checkpoint folder or preset; with --curves: the output PNG")
    ap.add_argument("out", nargs="+", help="output PNG; with --curves: log.jsonl files (LABEL=PATH allowed)")
    ap.add_argument("--curves", action="store_true", help="plot training curves instead")
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mesh-resolution", type=int, default=96)
    ap.add_argument("--title", default=None)
    ap.add_argument("--recipe", default="demo", choices=EVAL_RECIPES,
                    help="recipe of the held-out objects shown (default demo; the rich retrain: rich)")


def run(args) -> int:
    if args.curves:
        logs = {}
        for item in args.out:
            label, _, path = item.rpartition("=")
            logs[label or os.path.basename(os.path.dirname(os.path.abspath(path)))] = path
        print(plot_curves(logs, args.model, args.title))
        return 0
    if len(args.out) != 1:
        raise ValueError(f"give one output PNG, got {args.out}")
    model = load_model(args.model, device=args.device, dtype="fp32")
    print(make_pictures(model, args.out[0], args.objects, mesh_resolution=args.mesh_resolution,
                        title=args.title or args.model, recipe=args.recipe))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="model pictures (sample + held-out objects) or loss curves")
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
