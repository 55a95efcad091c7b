"""CPU training kernels: what the fast engine does on the CPU that torch's layers do
slower. Each keeps the layer's maths (tests/test_model.py, tests/test_train.py) and
quotes what it buys at step 7 on this project's 2-core machine (scripts/bench.py).
On a GPU every one falls back to torch's own ops. The builder (model.py) uses them;
a user's model runs on torch's layers as written."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def drop_positions(n: int, p: float, device=None, sigmas: float = 6.0) -> torch.Tensor:
    """Sorted indices of the dropped elements among n i.i.d. Bernoulli(p) trials.
    The gap before each drop is Geometric(p), floor(log(1-u) / log(1-p)) for uniform u,
    so only about n*p random numbers are drawn instead of n."""
    log_q = math.log1p(-p)
    chunks, start = [], 0
    while start < n:  # one pass almost always: a margin of 6 sigmas rarely runs short
        k = max(16, int((n - start) * p + sigmas * math.sqrt((n - start) * p * (1 - p))) + 16)
        gaps = torch.log1p(-torch.rand(k, device=device)).div_(log_q).floor_().long()
        pos = gaps.add_(1).cumsum_(0).add_(start - 1)
        chunks.append(pos)
        start = int(pos[-1]) + 1
    pos = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    return pos[:torch.searchsorted(pos, n)]


def _dense(t: torch.Tensor) -> bool:
    """Whether t's memory is one block in NCHW or channels_last order."""
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on CPU. torch's CPU bernoulli_ draws a random
    number per element and took 35% of a step-7 training step (torch.profiler, 2
    threads); here only the dropped positions are drawn (`drop_positions`), the same
    Bernoulli(p) mask: 21.4 -> 16.0 ms/batch at step 7 (scripts/bench.py). On a GPU,
    torch's own dropout is kept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not 0 < self.p < 1 or x.device.type != "cpu":
            return super().forward(x)
        n = x.numel()
        mask = torch.full((n,), 1.0 / (1.0 - self.p), dtype=x.dtype, device=x.device)
        mask.index_fill_(0, drop_positions(n, self.p, x.device), 0.0)
        # the mask in x's own layout (channels_last too): no layout-mixing multiply
        return x * (mask.as_strided(x.shape, x.stride()) if _dense(x) else mask.view(x.shape))


class _ReLUDropout(torch.autograd.Function):
    """max(y, 0) with the given positions of y's memory zeroed. The backward is ReLU's:
    a dropped position reads as inactive, so it passes no gradient, as under dropout."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = y.clamp_min(0)
        # a 1-D view of out's memory (NCHW or channels_last): dropout's positions are i.i.d.
        memory = out if out.is_contiguous() else out.permute(0, 2, 3, 1)
        memory.view(-1).index_fill_(0, positions, 0.0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0), None


class _BatchNormReLUDropout(torch.autograd.Function):
    """Training-mode BatchNorm, then ReLU with the given positions zeroed, on a
    channels_last batch seen as its memory: a [pixels, channels] matrix. torch's
    channels_last BatchNorm is slow with this model's 8-18 channels (a 64x8x24x24
    batch: 1.3 ms forward + backward against 0.5 ms in NCHW); sums down the matrix's
    columns and row-wise broadcasts are not: 14.5 -> 12.7 ms/batch at step 7
    (scripts/bench.py, 2 threads, "channels_last; torch BatchNorm" against "channels_last")."""

    @staticmethod
    def forward(ctx, y, weight, bias, running_mean, running_var, momentum: float, eps: float,
                scale: float, positions):
        n, c, h, w = y.shape
        rows = y.permute(0, 2, 3, 1).view(-1, c)
        m = rows.shape[0]
        mean = rows.sum(0).div_(m)
        d = rows - mean
        var = d.square().sum(0).div_(m)
        invstd = (var + eps).rsqrt_()
        running_mean.lerp_(mean, momentum)
        running_var.lerp_(var * (m / (m - 1)), momentum)  # unbiased, as BatchNorm keeps it
        a = weight * invstd * scale  # BN's scale and dropout's 1/(1-p) in one multiply
        out = torch.addcmul(bias * scale, d, a).clamp_min_(0)
        out.view(-1).index_fill_(0, positions, 0.0)
        ctx.save_for_backward(d, out, invstd, a)
        ctx.scale = scale
        return out.view(n, h, w, c).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        d, out, invstd, a = ctx.saved_tensors
        n, c, h, w = grad.shape
        g = grad.permute(0, 2, 3, 1).reshape(-1, c)  # a copy only if grad is not channels_last
        g = torch.ops.aten.threshold_backward(g, out, 0)  # ReLU's and dropout's zeros
        m = g.shape[0]
        g_sum, gd_sum = g.sum(0), (g * d).sum(0)
        # BatchNorm's input gradient: a * (g - mean(g) - d * invstd^2 * mean(g * d))
        dy = torch.addcmul(a * g_sum / -m, d, a * invstd.square() * gd_sum / -m).addcmul_(g, a)
        return (dy.view(n, h, w, c).permute(0, 3, 1, 2), gd_sum * invstd * ctx.scale, g_sum * ctx.scale,
                None, None, None, None, None, None)


class ConvBlock(nn.Sequential):
    """conv -> norm/ReLU in the configured order -> dropout.

    On CPU in training, conv -> BatchNorm -> ReLU -> dropout runs fused: dropout's
    1/(1-p) moves into BatchNorm's weight and bias (relu(s*y) = s*relu(y) for s > 0, and
    autograd carries the gradient through the product) and ReLU zeroes the dropped
    positions itself. That is 2 passes over the activations instead of 5, the same
    maths to float rounding (tests/test_model.py, tests/test_train.py): 16.0 -> 14.2
    ms/batch at step 7 in NCHW (scripts/bench.py). channels_last batches take
    `_BatchNormReLUDropout` when `batchnorm_by_hand` says so, else torch's BatchNorm
    as NCHW does. True/False force it (bench.py's rows); None, the default, uses it
    only when torch runs more than one thread: it wins at 2 threads and loses a
    little at 1, where each parallel-launcher job runs (bench.py --threads 1/2).
    The builder passes `train.batchnorm_by_hand` from the config."""

    def __init__(self, *layers: nn.Module, batchnorm_by_hand: bool | None = None):
        super().__init__(*layers)
        self.batchnorm_by_hand = batchnorm_by_hand

    def _fused(self) -> bool:
        if not (len(self) == 4 and isinstance(self[1], nn.BatchNorm2d) and isinstance(self[2], nn.ReLU)
                and isinstance(self[3], Dropout)):
            return False
        bn, drop = self[1], self[3]
        return bn.affine and bn.track_running_stats and 0 < drop.p < 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and x.device.type == "cpu" and self._fused()):
            return super().forward(x)
        conv, bn, relu, drop = self
        y = conv(x)
        n, _, h, w = y.shape
        if not _dense(y) or n * h * w < 2:
            return drop(relu(bn(y)))  # odd strides, or a batch BatchNorm refuses
        s = 1.0 / (1.0 - drop.p)
        bn.num_batches_tracked.add_(1)  # what nn.BatchNorm2d does in training
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        positions = drop_positions(y.numel(), drop.p, y.device)
        by_hand = self.batchnorm_by_hand
        if by_hand is None:
            by_hand = torch.get_num_threads() > 1
        if by_hand and not y.is_contiguous():  # channels_last
            return _BatchNormReLUDropout.apply(y, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                               momentum, bn.eps, s, positions)
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight * s, bn.bias * s,
                         True, momentum, bn.eps)
        return _ReLUDropout.apply(y, positions)
