"""Two character language models, each mapping token ids [N, T] to next-token logits
[N, T, vocab_size]: a recurrent one (GRU) and a convolutional one (causal, dilated)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class GRU(nn.Module):
    """Embedding -> `layers` GRU layers of `hidden` units -> a linear head over the vocabulary."""

    def __init__(self, vocab_size: int, embedding: int = 48, hidden: int = 128, layers: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding)
        self.rnn = nn.GRU(embedding, hidden, num_layers=layers, batch_first=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, T] -> [N, T, vocab_size]
        h, _ = self.rnn(self.embed(x))
        return self.head(h)


class CausalConv(nn.Module):
    """A Conv1d that sees only the present and the past: padded on the left by
    (kernel - 1) * dilation, so output t depends on inputs <= t."""

    def __init__(self, channels: int, kernel: int, dilation: int):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, T] -> [N, C, T]
        return self.conv(F.pad(x, (self.pad, 0)))


class CausalCNN(nn.Module):
    """Embedding -> `layers` residual causal convolutions (dilations 1, 2, 4, ...; ReLU)
    -> a linear head. Each position sees the last 1 + (kernel - 1) * (2^layers - 1)
    characters (63 for kernel 3 and 5 layers)."""

    def __init__(self, vocab_size: int, embedding: int = 48, channels: int = 64, kernel: int = 3,
                 layers: int = 5):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding)
        self.inp = nn.Conv1d(embedding, channels, 1)
        self.convs = nn.ModuleList(CausalConv(channels, kernel, 2 ** i) for i in range(layers))
        self.head = nn.Linear(channels, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, T] -> [N, T, vocab_size]
        h = self.inp(self.embed(x).transpose(1, 2))  # [N, C, T]
        for conv in self.convs:
            h = h + F.relu(conv(h))
        return self.head(h.transpose(1, 2))
