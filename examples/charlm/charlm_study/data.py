"""A text file as next-character prediction: items are (ids [T], next ids [T]), both int64."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

GPL3 = "/usr/share/common-licenses/GPL-3"  # on every Debian and Ubuntu machine, about 35 KB


class CharWindows(Dataset):
    """One split of a text file as windows of `seq_len` + 1 characters: x = window[:-1],
    y = window[1:] (the next character at every position).

    The vocabulary is every character of the whole file, sorted, so both splits (built
    separately) give a character the same id; `vocab_size` and `chars` say what it is.
    The first `train_fraction` of the text is the training split, the rest the test
    split: no character is in both. Windows start every `stride` characters (default
    `seq_len`: consecutive windows share one character, so every character but the
    split's first is a target exactly once); a smaller stride gives overlapping
    windows, more of them."""

    def __init__(self, split: str, path: str = GPL3, seq_len: int = 64, train_fraction: float = 0.9,
                 stride: int | None = None):
        if split not in ("train", "test"):
            raise ValueError(f"split must be train or test, not {split!r}")
        text = Path(path).read_text(encoding="utf-8")
        self.chars = sorted(set(text))
        self.vocab_size = len(self.chars)
        index = {c: i for i, c in enumerate(self.chars)}
        ids = torch.tensor([index[c] for c in text], dtype=torch.int64)
        cut = int(len(ids) * train_fraction)
        part = ids[:cut] if split == "train" else ids[cut:]
        stride = stride or seq_len
        starts = range(0, len(part) - seq_len, stride)
        if not starts:
            raise ValueError(f"the {split} split of {path} has {len(part)} characters, fewer than one window "
                             f"of seq_len + 1 = {seq_len + 1}")
        self.windows = torch.stack([part[s:s + seq_len + 1] for s in starts])  # [N, seq_len + 1]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        w = self.windows[i]
        return w[:-1], w[1:]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)
