"""Model: a block list from conf/model/*.yaml built into a CNN, or any nn.Module that
a model option names with `_target_`, built by hydra.utils.instantiate."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from ablate.errors import ConfigError, instantiate_error, one_line
from ablate.kernels import ConvBlock, Dropout

# ablate's own keys in a `_target_` model node; every other key is an argument.
MODEL_KEYS = ("name",)  # ablate's own key in a `_target_` model option; the rest are the callable's


def shape_of(cfg) -> tuple[int, int, int, int]:
    """(channels, height, width, classes) of image data, from the config: given by the
    data option, or filled in from the data set by `data.check_data`."""
    d = cfg.data
    shape = (d.get("channels"), d.get("height"), d.get("width"), d.get("num_classes"))
    if None in shape:
        raise ConfigError(f"data={d.name}: its image shape and class count are not known yet. Load the "
                          f"data first (ablate.data.check_data(cfg) fills them in), or set data.channels, "
                          f"data.height, data.width and data.num_classes.")
    return shape


def probe(cfg) -> tuple[torch.Tensor, tuple, str]:
    """A blank batch of two inputs as the data gives them, the output shape the task
    needs for it, and the words for both (for messages)."""
    d, kind = cfg.data, cfg.task.kind
    if d.get("seq_len") is not None and d.get("features") is None and d.get("channels") is None:
        x, what = torch.zeros(2, d.seq_len, dtype=torch.int64), f"[2, {d.seq_len}] token ids"
    elif d.get("features") is not None:
        x, what = torch.zeros(2, d.features), f"[2, {d.features}] features"
    else:
        c, h, w = d.channels, d.height, d.width
        x, what = torch.zeros(2, c, h, w), f"[2, {c}, {h}, {w}] images"
    if kind == "classification":
        out, means = (2, d.num_classes), f"logits of shape (2, {d.num_classes}): one per class"
    elif kind == "regression":
        out, means = (2, d.targets), f"shape (2, {d.targets}): one value per regression target"
    else:
        out = (2, d.seq_len, d.vocab_size)
        means = f"logits of shape (2, {d.seq_len}, {d.vocab_size}): one per position and token"
    return x, out, f"{what} in, {means}"


def _conv_block(c_in: int, c_out: int, kernel: int, padding: int, norm: str, dropout: float) -> ConvBlock:
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


def build_blocks(cfg) -> nn.Sequential:
    """Conv blocks (conv -> norm/ReLU in the configured order -> dropout), max-pools,
    then a head with no norm: a conv whose kernel covers what is left, GAP + 1x1
    conv, or a linear layer. Convs carry no bias, as in the seed."""
    m, norm = cfg.model, cfg.norm.name
    c, h, w, classes = shape_of(cfg)
    layers: list[nn.Module] = []
    for i, block in enumerate(m.blocks):
        if block == "pool":
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        else:
            k, p = block.get("kernel", 3), block.get("padding", 0)
            layers.append(_conv_block(c, block.conv, k, p, norm, m.dropout))
            c, h, w = block.conv, h + 2 * p - k + 1, w + 2 * p - k + 1
        if min(h, w) < 1:
            raise ConfigError(f"model={m.name}: block {i} ({block}) shrinks the image below 1x1. "
                              f"Fix the model's blocks (fewer pools, more padding).")
    head = m.head
    if head.type == "conv":
        if not head.kernel == h == w:
            raise ConfigError(f"model={m.name}: head kernel {head.kernel} must equal the {h}x{w} feature "
                              f"map left by the blocks. Fix it with `model.head.kernel={h}` (square maps "
                              f"only) or `model.head.type=gap`.")
        layers += [nn.Conv2d(c, classes, head.kernel, bias=False), nn.Flatten()]
    elif head.type == "gap":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, classes, 1, bias=False), nn.Flatten()]
    elif head.type == "linear":
        layers += [nn.Flatten(), nn.Linear(c * h * w, classes, bias=False)]
    else:
        raise ConfigError(f"model.head.type={head.type!r} is invalid: must be conv, gap or linear.")
    return nn.Sequential(*layers)


def build_target(cfg) -> nn.Module:
    """The `_target_` class or factory, called with the node's other keys (resolved, so
    `${norm.name}` or `${data.num_classes}` among them work), as plain containers."""
    m = cfg.model
    node = {k: v for k, v in OmegaConf.to_container(m, resolve=True).items() if k not in MODEL_KEYS}
    node.setdefault("_convert_", "all")
    try:
        module = instantiate(node)
    except Exception as exc:  # Hydra wraps import errors and the callable's own TypeError alike
        raise ConfigError(f"model={m.name}: cannot build {m._target_}: {instantiate_error(exc)}. Fix model._target_ "
                          f"(an importable class or function) or its arguments in the model option.") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"model={m.name}: {m._target_} gave a {type(module).__name__}, not a torch.nn.Module. "
                          f"Point model._target_ at a Module class or a function that returns one.")
    return module


def build_model(cfg) -> nn.Module:
    return build_target(cfg) if "_target_" in cfg.model else build_blocks(cfg)


def keyed_init(model: nn.Module, seed: Callable[[str], int]) -> nn.Module:
    """Draw each layer's initial weights afresh from a stream of its own, keyed by the
    layer's type, its parameters' shapes and its rank among the layers of that key
    (`seed(key)` gives the stream's seed): two models that share a layer of some shape
    start it from the same weights, whatever was added or removed before it. Each
    layer's own `reset_parameters` draws them, so their law is PyTorch's default. Only
    for ablate's block lists: a user's class may set its weights its own way."""
    rank: Counter = Counter()
    for module in model.modules():
        own = [tuple(p.shape) for p in module.parameters(recurse=False)]
        if own and hasattr(module, "reset_parameters"):
            key = f"{type(module).__name__}{own}"
            rank[key] += 1
            torch.manual_seed(seed(f"{key}#{rank[key]}"))
            module.reset_parameters()
    return model


def check_model(cfg) -> int:
    """Build the model and push a blank batch of two inputs through it, in eval mode on
    the CPU, before any run exists: a model that rejects the data's shape or gives the
    wrong output shape for the task fails here, in one line. Returns its parameter count."""
    if "_target_" not in cfg.model and cfg.data.get("channels") is None:
        raise ConfigError(f"model={cfg.model.name} is a block list of conv layers, which takes images, and "
                          f"data={cfg.data.name} gives other inputs. Name your model with `_target_` in a "
                          f"model option (see docs/your-own-study.md).")
    model = build_model(cfg)
    x, want, words = probe(cfg)
    where = f"model={cfg.model.name} on data={cfg.data.name}, task={cfg.task.name}"
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise ConfigError(f"{where}: the model rejects {words.split(' in,')[0]}: {one_line(exc)}. Fix the "
                          f"model's arguments (input size, channels) or pick data it takes.") from None
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if cfg.task.kind == "regression" and tuple(want) == (2, 1) and got == (2,):
        got = (2, 1)  # one value per sample, `nn.Linear(h, 1)` then `.squeeze(-1)`: matched to the target (Task.flat)
    if got != tuple(want):
        raise ConfigError(f"{where}: the model gives {got}; it must give {words.split(' in, ')[1]}. Fix its "
                          f"output size, e.g. `num_classes: ${{data.num_classes}}`, `outputs: ${{data.targets}}` "
                          f"or `vocab_size: ${{data.vocab_size}}` in the model option.")
    return param_count(model)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
