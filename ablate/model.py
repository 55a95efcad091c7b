"""Model: one generic builder turns a block list from conf/model/*.yaml into a CNN."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ablate.config import ConfigError


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
    little at 1, where each parallel-launcher job runs (bench.py --threads 1/2)."""

    batchnorm_by_hand: bool | None = None

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


def _conv_block(c_in: int, c_out: int, kernel: int, padding: int, norm: str, dropout: float):
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False)]
    if norm == "bn_before_relu":
        layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
    elif norm == "bn_after_relu":
        layers += [nn.ReLU(), nn.BatchNorm2d(c_out)]
    else:
        layers += [nn.ReLU()]
    if dropout > 0:
        layers.append(Dropout(dropout))
    return ConvBlock(*layers)


def build_model(cfg) -> nn.Sequential:
    """Conv blocks (conv -> norm/ReLU in the configured order -> dropout), max-pools,
    then a head with no norm: a conv whose kernel covers what is left, GAP + 1x1
    conv, or a linear layer. Convs carry no bias, as in the seed."""
    m, norm = cfg.model, cfg.norm.name
    c, size = m.in_channels, m.get("image_size", 28)
    layers: list[nn.Module] = []
    for i, block in enumerate(m.blocks):
        if block == "pool":
            layers.append(nn.MaxPool2d(2))
            size //= 2
        else:
            k, p = block.get("kernel", 3), block.get("padding", 0)
            layers.append(_conv_block(c, block.conv, k, p, norm, m.dropout))
            c, size = block.conv, size + 2 * p - k + 1
        if size < 1:
            raise ConfigError(f"model={m.name}: block {i} ({block}) shrinks the image below 1x1. "
                              f"Fix the model's blocks (fewer pools, more padding).")
    head = m.head
    if head.type == "conv":
        if head.kernel != size:
            raise ConfigError(f"model={m.name}: head kernel {head.kernel} must equal the {size}x{size} "
                              f"feature map left by the blocks. Fix it with `model.head.kernel={size}`.")
        layers += [nn.Conv2d(c, m.num_classes, head.kernel, bias=False), nn.Flatten()]
    elif head.type == "gap":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, m.num_classes, 1, bias=False), nn.Flatten()]
    elif head.type == "linear":
        layers += [nn.Flatten(), nn.Linear(c * size * size, m.num_classes, bias=False)]
    else:
        raise ConfigError(f"model.head.type={head.type!r} is invalid: must be conv, gap or linear.")
    return nn.Sequential(*layers)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
