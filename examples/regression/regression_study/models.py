"""A plain torch MLP for feature vectors, with one output per regression target."""
from __future__ import annotations

from torch import nn


class MLP(nn.Module):
    """`depth` hidden layers of `hidden` units (Linear -> ReLU -> (Dropout)), then a
    linear head with `outputs` units. `depth=0` is linear regression."""

    def __init__(self, features: int, outputs: int, hidden: int = 64, depth: int = 2, dropout: float = 0.0):
        super().__init__()
        layers, width = [], features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # [N, features] -> [N, outputs]
        return self.net(x)
