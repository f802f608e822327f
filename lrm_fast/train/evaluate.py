"""Held-out evaluation: novel-view PSNR and silhouette IoU of a model vs exact ground truth.

For each object, view ``source_view`` (default 0) is the input; ``views`` other views (chosen by
``seed``) are rendered at ``resolution`` on a white background and compared with the ground truth
RGBA composited on white:

* PSNR (dB) per view, averaged over views and objects;
* silhouette IoU per view of ``opacity > 0.5`` vs ``alpha > 0.5``, averaged;
* the same for the trivial *background-only* baseline (all white, opacity 0: PSNR of a blank image,
  IoU 0 wherever the object is visible).

    python -m lrm_fast.train.evaluate lrm_fast/assets/demo data/synthetic/val --objects 100
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch


@torch.inference_mode()
def evaluate(model, root: str, objects: int = 100, views: int = 4, resolution: int = 64,
             source_view: int = 0, seed: int = 1234, batch: int = 4, progress: bool = False) -> dict:
    from ..data.openlrm import MultiViewDataset, collate

    cfg = model.cfg
    ds = MultiViewDataset(root, side_views=views, source_size=cfg.encoder.image_size, render_size=resolution,
                          patch=None, seed=seed, backgrounds=(1.0,), camera_feature=cfg.camera.feature,
                          distance=cfg.camera.source_distance, source_view=source_view)
    n = min(objects, len(ds))
    p = next(model.parameters())
    model.eval()
    psnrs, ious, b_psnrs, b_ious = [], [], [], []
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        b = collate([ds[i] for i in range(s, min(n, s + batch))])
        planes = model.forward_planes(b["source_image"].to(p.device, p.dtype), b["source_camera"].to(p.device, p.dtype))
        # novel views only: drop view 0 (the source)
        c2w, K = b["c2w"][:, 1:].to(p.device), b["intrinsics"][:, 1:].to(p.device)
        out = model.render(planes, c2w, K, resolution, background=1.0)
        B, V = c2w.shape[:2]
        pred = out["rgb"].float().cpu().reshape(B, V, -1, 3)
        occ = out["opacity"].float().cpu().reshape(B, V, -1) > 0.5
        gt = b["rgb"][:, 1:].reshape(B, V, -1, 3)
        gt_occ = b["alpha"][:, 1:].reshape(B, V, -1) > 0.5
        for pr, o, g, go in ((pred, occ, gt, gt_occ), (torch.ones_like(gt), torch.zeros_like(gt_occ), gt, gt_occ)):
            mse = (pr - g).square().mean(-1).mean(-1).clamp_min(1e-10)                  # [B, V]
            ps = (-10 * torch.log10(mse)).reshape(-1)
            inter = (o & go).sum(-1).float()
            union = (o | go).sum(-1).float()
            iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).reshape(-1)
            if pr is pred:
                psnrs.append(ps), ious.append(iou)
            else:
                b_psnrs.append(ps), b_ious.append(iou)
        if progress:
            print(f"  {min(n, s + batch)}/{n} objects, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    cat = lambda xs: torch.cat(xs)  # noqa: E731
    return {"objects": n, "views_per_object": views, "resolution": resolution,
            "samples_per_ray": cfg.render.samples_per_ray,
            "psnr": cat(psnrs).mean().item(), "iou": cat(ious).mean().item(),
            "baseline_psnr": cat(b_psnrs).mean().item(), "baseline_iou": cat(b_ious).mean().item(),
            "skipped": ds.skipped, "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="novel-view PSNR / silhouette IoU on held-out objects")
    ap.add_argument("model", help="checkpoint folder (config.json + model.safetensors) or preset")
    ap.add_argument("data", help="held-out dataset root (OpenLRM layout)")
    ap.add_argument("--objects", type=int, default=100)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--samples", type=int, default=None, help="samples per ray (default: the model's)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the metrics JSON here too")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from ..api import load_model

    model = load_model(args.model, device="cpu")
    if args.samples:
        import dataclasses

        model.renderer.cfg = dataclasses.replace(model.renderer.cfg, samples_per_ray=args.samples)
        model.cfg.render.samples_per_ray = args.samples
    res = evaluate(model, args.data, args.objects, args.views, args.resolution, progress=True)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        from ..io.export import atomic_path
        import os

        tmp = atomic_path(args.out)
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
