"""CPU training kernels: what the fast engine does on the CPU that torch's layers do
slower. Each keeps the layer's maths (tests/test_kernels.py, tests/test_train.py) and
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


class ConvBlock(nn.Sequential):
    """conv -> norm/ReLU in the configured order -> dropout.

    On CPU in training, conv -> BatchNorm -> ReLU -> dropout runs fused: dropout's
    1/(1-p) moves into BatchNorm's weight and bias (relu(s*y) = s*relu(y) for s > 0, and
    autograd carries the gradient through the product) and ReLU zeroes the dropped
    positions itself. That is 2 passes over the activations instead of 5, the same
    maths to float rounding (tests/test_kernels.py, tests/test_train.py): 16.7 -> 15.1
    ms/batch at step 7 in NCHW, over full epochs (docs/performance.md). BatchNorm
    itself stays torch's, in either memory layout."""

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
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight * s, bn.bias * s,
                         True, momentum, bn.eps)
        return _ReLUDropout.apply(y, positions)
