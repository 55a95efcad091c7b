"""Data: any data set of (input, target) items. A data option names a torchvision-style
class with `_target_`, which ablate builds as `(root, train=..., download=...)`, or gives
its splits as `train` and `test` nodes, each with its own `_target_`. Every item is
read and checked once, and the whole set is held as tensors on the training device.
A set larger than `data.memory_limit_mb` streams through a DataLoader instead, through
the same engine.

    input x                                         target y
    image [C, H, W]: PIL, HxWxC array, CxHxW tensor  class index: an int
    features [F]: a 1-D float tensor or array       float or float vector [K] (regression)
    tokens [T]: a 1-D integer tensor (int64)        token ids [T] (sequence)

Images are normalised per channel, features standardised per feature from the
training split (`data.standardize`), token ids are used as they are.

A validation split (`data.val`: a fraction or a count of the training split, held out
by one fixed draw, stratified by class; or a `val` node with its own `_target_`)
chooses epochs, steps a plateau scheduler and stops early; the test split reports.

    items     one item as tensors, a split read and stacked (Split)
    sources   a data option's classes or split nodes, archives, diagnoses, the cache,
              the validation split
    checks    the data against the task, before any run: what it derives
    device    tensors on the training device, or a stream; load -> Data
"""
from ablate.data.checks import check_data, checked, fill
from ablate.data.device import Data, Stream, Tensors, load
from ablate.data.items import Split
from ablate.data.sources import DERIVED, splits

__all__ = ["DERIVED", "Data", "Split", "Stream", "Tensors", "check_data", "checked", "fill", "load", "splits"]
