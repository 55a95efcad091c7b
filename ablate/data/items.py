"""Items: one (input, target) item of any data set as tensors, checked, and a whole
split read into stacked CPU tensors (`Split`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import VisionDataset
from torchvision.transforms.v2.functional import to_image
from tqdm.auto import tqdm

from ablate.errors import DataError, one_line


@dataclass
class Split:
    """One split as read from disk, on the CPU: inputs [N, ...] (uint8 pixels, floats
    used as they are, or int64 token ids) and targets ([N] int64 classes, [N, K]
    float32, or [N, T] int64 tokens); or, for a set too big to hold, the data set
    itself, with its class labels when it lists them (`.targets`)."""
    inputs: torch.Tensor | None
    targets: torch.Tensor | None
    dataset: Dataset
    shape: tuple[int, ...]  # one input's
    kind: str               # image | features | tokens
    target_kind: str        # class | float | tokens
    source: str             # what to name in an error: a file, or the class and root
    drawn: str | None = None  # a held-out validation split: how it was drawn (logged with the run)

    def __len__(self) -> int:
        return len(self.dataset) if self.inputs is None else len(self.inputs)


def _input(x, i: int, where: str) -> tuple[torch.Tensor, str]:
    """An input as a tensor and its kind: a 1-D float vector is features, a 1-D integer
    one token ids; anything else is an image (PIL, HxW(xC) array, (C)xHxW tensor)."""
    if isinstance(x, np.ndarray) and x.ndim == 1:
        x = torch.from_numpy(x)
    if isinstance(x, torch.Tensor) and x.ndim == 1:
        if x.dtype.is_floating_point:
            return x, "features"
        if x.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            return x.long(), "tokens"
    try:
        if not isinstance(x, (torch.Tensor, np.ndarray, Image.Image)) or getattr(x, "ndim", 2) not in (2, 3):
            raise TypeError(f"a {type(x).__name__}" + (f" of {x.ndim} dimensions" if hasattr(x, "ndim") else ""))
        return to_image(x).as_subclass(torch.Tensor), "image"  # -> CHW tensor
    except Exception as exc:
        raise DataError(f"{where}: the input of item {i} is a {type(x).__name__}, which ablate cannot train on "
                        f"({one_line(exc)}). Return an image (PIL, HxWxC array, CxHxW tensor), a 1-D float "
                        f"tensor of features or a 1-D int64 tensor of token ids.") from None


def _target(y, i: int, where: str) -> tuple[torch.Tensor | int, str]:
    """A target and its kind: an int is a class index, a float or float vector a
    regression target, a 1-D integer tensor token ids."""
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if isinstance(y, torch.Tensor) and y.ndim == 0:
        y = y.item()
    if isinstance(y, (bool, np.bool_)):
        raise DataError(f"{where}: the target of item {i} is a bool. Return an int class index (0 .. classes-1) "
                        f"or a float.")
    if isinstance(y, (int, np.integer)):
        return int(y), "class"
    if isinstance(y, (float, np.floating)):
        return torch.tensor([float(y)]), "float"
    if isinstance(y, torch.Tensor) and y.ndim == 1:
        return (y.float(), "float") if y.dtype.is_floating_point else (y.long(), "tokens")
    raise DataError(f"{where}: the target of item {i} is {type(y).__name__} {y!r:.60}, which ablate cannot train "
                    f"on. Return an int class index, a float or 1-D float tensor (regression), or a 1-D int64 "
                    f"tensor of token ids (sequence).")


def _pair(item, i: int, where: str) -> tuple[torch.Tensor, torch.Tensor | int]:
    """An (input, target) item as tensors (a class index stays an int); one line if it is not one."""
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise DataError(f"{where}: item {i} is a {type(item).__name__}, not an (input, target) pair. "
                        f"Make the data set's __getitem__ return (input, target).")
    return _input(item[0], i, where)[0], _target(item[1], i, where)[0]


def _kinds(item, where: str) -> tuple[torch.Tensor, str, str]:
    """Item 0's input tensor, input kind and target kind."""
    _pair(item, 0, where)
    x, kind = _input(item[0], 0, where)
    return x, kind, _target(item[1], 0, where)[1]


def _arrays(ds) -> tuple[torch.Tensor, torch.Tensor] | None:
    """torchvision's own sets keep their pixels in `.data` (uint8, [N, H, W] or
    [N, H, W, C]) and labels in `.targets`: read those directly (60,000 MNIST items one
    by one take seconds). Only when no transform is set, and only if item 0 agrees."""
    if not isinstance(ds, VisionDataset) or getattr(ds, "transforms", None) is not None:
        return None
    data, targets = getattr(ds, "data", None), getattr(ds, "targets", None)
    if data is None or targets is None or len(data) != len(targets) or len(data) == 0:
        return None
    x = torch.as_tensor(data)
    if x.dtype != torch.uint8 or x.ndim not in (3, 4):
        return None
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    y = torch.as_tensor(targets, dtype=torch.int64)
    image, label = _pair(ds[0], 0, type(ds).__name__)
    if not (torch.equal(image, x[0]) and label == y[0]):
        return None
    return x.contiguous(), y


def _items(ds, where: str, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item through __getitem__, checked and stacked."""
    inputs, targets = [], []
    for i in tqdm(range(len(ds)), desc=f"reading {where}", disable=not progress or len(ds) < 20_000, leave=False):
        x, y = _pair(ds[i], i, where)
        if inputs and (x.shape != inputs[0].shape or x.dtype != inputs[0].dtype):
            raise DataError(f"{where}: the input of item {i} is {tuple(x.shape)} {x.dtype}, item 0's "
                            f"{tuple(inputs[0].shape)} {inputs[0].dtype}. ablate stacks a split into one "
                            f"tensor: give every input the same shape and type (pad sequences to one length).")
        if targets and isinstance(y, torch.Tensor) and y.shape != targets[0].shape:
            raise DataError(f"{where}: the target of item {i} has shape {tuple(y.shape)}, item 0's "
                            f"{tuple(targets[0].shape)}. Give every target the same shape.")
        if targets and isinstance(y, int) != isinstance(targets[0], int):
            raise DataError(f"{where}: the target of item {i} is a {type(y).__name__}, item 0's a "
                            f"{type(targets[0]).__name__}. Give every target one kind.")
        inputs.append(x)
        targets.append(y)
    y = torch.tensor(targets, dtype=torch.int64) if isinstance(targets[0], int) else torch.stack(targets)
    return torch.stack(inputs), y

