"""Training losses: MSE + lambda * LPIPS (+ optional opacity and chroma terms).

LPIPS uses the ``lpips`` package (Zhang et al. 2018) with its published linear-layer weights. The
*published metric* needs the VGG16 (or AlexNet) ImageNet backbone: give its torchvision state-dict
file as ``weights`` (no downloads at run time). ``random_backbone=True`` (``pnet_rand=True``) builds
the same network with a random trunk: that is NOT the published metric and is meant for tests only.
``describe()`` says which one is in use, and the trainer logs it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] (over all elements)."""
    mse = F.mse_loss(pred.float(), target.float())
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def chroma_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE of the colour part of ``[..., 3]`` images: each pixel less its own channel mean.

    An RGB error splits into two orthogonal parts, gray (the same in all channels) and chroma (what
    remains): ``sum_c d_c^2 = 3 * mean(d)^2 + sum_c (d_c - mean(d))^2``. So ``mse + w * chroma_mse``
    is the plain MSE with its colour part weighted ``1 + w``: a gray prediction of a red ball is
    penalised more, a correct colour at the wrong brightness no more than before. Used by the
    trainer's ``chroma_weight`` (the demo model learnt luminance only: ``docs/demo/colour.md``)."""
    pc = pred - pred.mean(-1, keepdim=True)
    tc = target - target.mean(-1, keepdim=True)
    return F.mse_loss(pc.float(), tc.float())


class LPIPSLoss(nn.Module):
    """``lpips.LPIPS`` on ``[N, 3, H, W]`` images in [0, 1] -> mean distance. Frozen, eval mode."""

    def __init__(self, net: str = "vgg", weights: str | None = None, random_backbone: bool = False):
        super().__init__()
        if weights is None and not random_backbone:
            raise ValueError("LPIPS needs local backbone weights (lpips_weights: path to the torchvision "
                             f"{net} state dict) or lpips_random=True (tests only); nothing is downloaded")
        import lpips

        self.net_name, self.weights = net, weights
        self.random_backbone = weights is None
        self.lpips = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if weights is not None:
            self._load_backbone(weights)
        self.lpips.eval().requires_grad_(False)

    def _load_backbone(self, path: str) -> None:
        """torchvision ``vgg16``/``alexnet`` state dict (``features.<i>.weight``) -> lpips' slices."""
        from ..io.checkpoint import read_state_dict

        sd = read_state_dict(path)
        trunk = self.lpips.net
        mapped = {}
        for sname, sl in trunk.named_children():
            for idx, _ in sl.named_children():
                for p in ("weight", "bias"):
                    key = f"features.{idx}.{p}"
                    if key in sd:
                        mapped[f"{sname}.{idx}.{p}"] = sd[key]
        missing, _ = trunk.load_state_dict(mapped, strict=False)
        if missing:
            raise ValueError(f"{path}: not a torchvision {self.net_name} state dict; missing {missing[:6]}")

    def describe(self) -> str:
        if self.random_backbone:
            return f"lpips {self.net_name} with a RANDOM backbone (pnet_rand=True; tests only, not the metric)"
        return f"lpips {self.net_name} with backbone weights from {self.weights}"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.lpips(pred.float() * 2 - 1, target.float() * 2 - 1).mean()
