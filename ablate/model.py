"""Model: one generic builder turns a block list from conf/model/*.yaml into a CNN."""
from __future__ import annotations

from torch import nn

from ablate.config import ConfigError


def _conv_block(c_in: int, c_out: int, kernel: int, padding: int, norm: str, dropout: float):
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False)]
    if norm == "bn_before_relu":
        layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
    elif norm == "bn_after_relu":
        layers += [nn.ReLU(), nn.BatchNorm2d(c_out)]
    else:
        layers += [nn.ReLU()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
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
