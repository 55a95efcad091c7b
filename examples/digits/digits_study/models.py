"""Two models written as plain torch modules, with no ablate in them. Their `norm`
argument takes ablate's norm options, so `norm=...` sweeps reach them too."""
from __future__ import annotations

from torch import nn


def conv_norm_relu(c_in: int, c_out: int, norm: str) -> list[nn.Module]:
    """conv -> BatchNorm -> ReLU, conv -> ReLU -> BatchNorm, or conv -> ReLU."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none")
    if norm == "bn_before_relu":
        return [conv, nn.BatchNorm2d(c_out), nn.ReLU()]
    if norm == "bn_after_relu":
        return [conv, nn.ReLU(), nn.BatchNorm2d(c_out)]
    if norm == "none":
        return [conv, nn.ReLU()]
    raise ValueError(f"norm must be none, bn_before_relu or bn_after_relu, not {norm!r}")


class Residual(nn.Module):
    def __init__(self, width: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(*conv_norm_relu(width, width, norm), *conv_norm_relu(width, width, norm))

    def forward(self, x):
        return x + self.body(x)


class ResNet(nn.Module):
    """A stem conv, `blocks` residual blocks, global average pooling, a linear head."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, blocks: int = 2,
                 norm: str = "bn_before_relu", skip: bool = True):
        super().__init__()
        body = [Residual(width, norm) if skip else nn.Sequential(*Residual(width, norm).body)
                for _ in range(blocks)]
        self.net = nn.Sequential(*conv_norm_relu(in_channels, width, norm), *body,
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.net(x)


def mlp(in_channels: int, height: int, width: int, num_classes: int, hidden: int = 64) -> nn.Module:
    """A factory, not a class: `_target_` may name either."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * height * width, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))
