"""Model: one generic builder turns a block list from conf/model/*.yaml into a CNN."""
from __future__ import annotations

import torch
from torch import nn

from ablate.config import ConfigError


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on CPU. torch's CPU bernoulli_ draws one 32-bit
    number per element and took 35% of a step-7 training step (torch.profiler, 2
    threads); here one 64-bit draw gives four 16-bit lanes, so p is used as a
    multiple of 1/65536 (0.05 -> 0.050003). On a GPU, torch's own dropout is kept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        n = x.numel()
        words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
        lanes = words.view(torch.int16)[:n]  # uniform over [-32768, 32767]
        # i.i.d. lanes in x's own layout (channels_last too): no layout-mixing multiply
        dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
        lanes = lanes.as_strided(x.shape, x.stride()) if dense else lanes.view(x.shape)
        keep = lanes >= -32768 + round(self.p * 65536)
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


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
    return nn.Sequential(*layers)


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
