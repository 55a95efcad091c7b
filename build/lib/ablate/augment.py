"""Batched augmentation on the training device. Each sample draws its own random
parameters, but one kernel call transforms the whole batch: no per-sample PIL, as in
airbench. Batches are normalised [N, C, H, W], any channel count; fill values are
given in pixel units and mapped per channel."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def crop(x: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, padding: int,
         fill: float | torch.Tensor = 0.0) -> torch.Tensor:
    """RandomCrop(size, padding) per sample, as torchvision does it: pad every side by
    `padding` with `fill`, then keep the HxW window whose corner is (top, left), each
    in [0, 2 * padding]. One indexing op gathers every window of the batch."""
    n, c, h, w = x.shape
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    padded = fill.expand(n, c, h + 2 * padding, w + 2 * padding).contiguous()
    padded[:, :, padding:padding + h, padding:padding + w] = x
    rows = (tops.view(n, 1) + torch.arange(h, device=x.device)).view(n, h, 1)
    cols = (lefts.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, w)
    windows = padded[torch.arange(n, device=x.device).view(n, 1, 1), :, rows, cols]  # [N, H, W, C]
    return windows.permute(0, 3, 1, 2).contiguous()


def flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RandomHorizontalFlip per sample: the images where `mask` is true, mirrored."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def rotate(x: torch.Tensor, angles_deg: torch.Tensor, fill: float | torch.Tensor = 0.0,
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


def erase(x: torch.Tensor, p: float, scale, ratio, value: float | torch.Tensor = 0.0,
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
    fill = value if isinstance(value, torch.Tensor) else torch.full_like(x, value)
    return torch.where(box.unsqueeze(1), fill, x)


class Augment:
    """The `augmentation` config as a callable on normalised batches: crop, flip,
    rotate, erase, in that order, each only when configured. `mean` and `std` are the
    data's per-channel statistics in pixel units, to map fill values."""

    def __init__(self, cfg, mean, std, generator: torch.Generator | None = None):
        self.gen = generator  # None: torch's global stream
        self.crop, self.flip = cfg.get("crop"), cfg.get("flip")
        self.rot, self.era = cfg.get("rotate"), cfg.get("erase")
        self.mean, self.std = [float(m) for m in mean or []], [float(s) for s in std or []]  # None: not images
        self._fills: dict = {}

    @property
    def active(self) -> bool:
        return any(op is not None for op in (self.crop, self.flip, self.rot, self.era))

    def _norm(self, pixel: float, device) -> torch.Tensor:
        """A pixel value [0, 1] in normalised units, one per channel, as [1, C, 1, 1].
        Computed in double from the config's floats, like the scalar it replaces."""
        key = (pixel, device)
        if key not in self._fills:
            values = [(pixel - m) / s for m, s in zip(self.mean, self.std, strict=True)]
            self._fills[key] = torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        return self._fills[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        if self.crop is not None:
            p = int(self.crop.padding)
            tops, lefts = torch.randint(0, 2 * p + 1, (2, n), device=dev, generator=self.gen)
            x = crop(x, tops, lefts, p, self._norm(self.crop.fill, dev))
        if self.flip is not None:
            x = flip(x, torch.rand(n, device=dev, generator=self.gen) < self.flip.p)
        if self.rot is not None:
            d = float(self.rot.degrees)
            angles = (torch.rand(n, device=dev, generator=self.gen) * 2 - 1) * d
            x = rotate(x, angles, self._norm(self.rot.fill, dev), self.rot.interpolation)
        if self.era is not None:
            e = self.era
            x = erase(x, e.p, tuple(e.scale), tuple(e.ratio), self._norm(e.value, dev), generator=self.gen)
        return x
