"""Batched augmentation on the training device. Each sample draws its own random
parameters, but one kernel call transforms the whole batch: no per-sample PIL."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rotate(x: torch.Tensor, angles_deg: torch.Tensor, fill: float = 0.0,
           mode: str = "nearest") -> torch.Tensor:
    """Rotate each image of [N, C, H, W] counter-clockwise by its angle, as
    torchvision.transforms.functional.rotate does, with `fill` outside the image."""
    n, _, h, w = x.shape
    a = angles_deg.to(x.dtype).view(n, 1, 1) * (math.pi / 180.0)
    cos, sin = torch.cos(a), torch.sin(a)
    # Inverse map (output -> input pixel) in normalised coords, as torchvision builds it:
    # F.affine_grid's grid for [[cos, -sin, 0], [sin, cos, 0]] (align_corners=False),
    # written out because its batched 784x3 @ 3x2 matmul took 280 us a batch, this 55.
    xs = torch.linspace(1 / w - 1, 1 - 1 / w, w, dtype=x.dtype, device=x.device).view(1, 1, w)
    ys = torch.linspace(1 / h - 1, 1 - 1 / h, h, dtype=x.dtype, device=x.device).view(1, h, 1)
    grid = torch.stack([cos * xs - sin * ys, sin * xs + cos * ys], dim=3)
    # Sampling x - fill with zero padding, then adding fill back, pads with `fill`.
    return F.grid_sample(x - fill, grid, mode=mode, padding_mode="zeros", align_corners=False) + fill


def erase(x: torch.Tensor, p: float, scale, ratio, value: float = 0.0,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """RandomErasing per sample: with probability p, one rectangle of relative area
    in `scale` and aspect in `ratio` is set to `value`. Rectangles that would not
    fit are clipped to the image (torchvision retries instead: a small difference)."""
    n, _, h, w = x.shape
    dev = x.device

    def uniform(lo, hi):
        return torch.rand(n, device=dev, generator=generator) * (hi - lo) + lo

    area = uniform(*scale) * h * w
    log_r = uniform(math.log(ratio[0]), math.log(ratio[1]))
    eh = (area * torch.exp(-log_r)).sqrt().round().clamp(1, h).long()
    ew = (area * torch.exp(log_r)).sqrt().round().clamp(1, w).long()
    top = (torch.rand(n, device=dev, generator=generator) * (h - eh + 1)).long()
    left = (torch.rand(n, device=dev, generator=generator) * (w - ew + 1)).long()
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    box = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
           & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1)))
    box &= (torch.rand(n, device=dev, generator=generator) < p).view(n, 1, 1)
    return torch.where(box.unsqueeze(1), torch.full_like(x, value), x)


class Augment:
    """The `augmentation` config as a callable on normalised batches."""

    def __init__(self, cfg, mean: float, std: float):
        self.rot, self.era = cfg.rotate, cfg.erase
        self.mean, self.std = mean, std

    @property
    def active(self) -> bool:
        return self.rot is not None or self.era is not None

    def _norm(self, pixel: float) -> float:  # pixel value [0, 1] -> normalised units
        return (pixel - self.mean) / self.std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.rot is not None:
            d = float(self.rot.degrees)
            angles = (torch.rand(x.shape[0], device=x.device) * 2 - 1) * d
            x = rotate(x, angles, self._norm(self.rot.fill), self.rot.interpolation)
        if self.era is not None:
            e = self.era
            x = erase(x, e.p, tuple(e.scale), tuple(e.ratio), self._norm(e.value))
        return x
