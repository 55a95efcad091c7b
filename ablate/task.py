"""Task: what the model's output means, how it is scored and how it is trained.

    classification  targets: class indices [N]       outputs: logits [N, classes]
    regression      targets: floats [N, targets]     outputs: [N, targets]
    sequence        targets: token ids [N, T]        outputs: logits [N, T, vocab]
                    (`ignore_index` positions count in neither the loss nor the metrics)

A task option (conf/task/) names its loss by `_target_` (any callable taking
(outputs, targets) and returning a scalar, such as torch.nn.CrossEntropyLoss with
`label_smoothing`, MSELoss or HuberLoss) and its metrics (ablate.metrics). The engine
calls `loss` and `update`, never a loss or a metric of its own.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from torchmetrics.text import Perplexity

from ablate import metrics as M
from ablate.errors import ConfigError, instantiate_error, one_line


def _sizes(cfg) -> tuple[int | None, int | None]:
    """(classes, outputs) of the data, as the task needs them: the class count (the
    vocabulary for a sequence task) and the number of regression targets."""
    d, kind = cfg.data, cfg.task.kind
    classes = d.get("vocab_size") if kind == "sequence" else d.get("num_classes")
    return classes, d.get("targets")


def _ignore_index(cfg) -> int | None:
    return cfg.task.get("ignore_index") if cfg.task.kind == "sequence" else None


def metric_specs(cfg) -> dict[str, M.Metric]:
    """The task's metrics, built (each a torchmetrics object), in the config's order."""
    t = cfg.task
    nodes = OmegaConf.to_container(t.metrics, resolve=True) if t.metrics is not None else {}
    if not nodes:
        raise ConfigError(f"task={t.name} has no metrics. Add one, e.g. `+task.metrics.acc={{}}`.")
    classes, outputs = _sizes(cfg)
    return {name: M.build(name, node, t.kind, classes, outputs, _ignore_index(cfg)) for name, node in nodes.items()}


def fill_objective(cfg) -> None:
    """`objective.metric: null` means the task's first metric: written into the config,
    so the run's params say what it was scored by."""
    if cfg.objective.metric is None:
        first = next(iter(cfg.task.metrics or {}), None)
        with open_dict(cfg):
            cfg.objective.metric = first


@dataclass
class Task:
    kind: str
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metrics: dict[str, M.Metric]          # evaluated on the test split each epoch
    objective: M.Objective
    train_metrics: dict[str, M.Metric] = field(default_factory=dict)  # accumulated over the training batches

    def flat(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A sequence's [N, T, V] logits and [N, T] targets as [N*T, V] and [N*T]: what
        losses and class metrics take. A regression of one target takes [N] or [N, 1]
        outputs for [N] or [N, 1] targets, each matched to the other's shape (a loss would
        broadcast [N] against [N, 1] to [N, N]). Other tasks pass through."""
        if self.kind == "sequence":
            return out.flatten(0, 1), y.flatten()
        if self.kind == "regression" and out.shape != y.shape:  # one target: [B] and [B, 1] matched, never broadcast
            if out.ndim == y.ndim - 1 and y.shape[-1] == 1:
                return out.unsqueeze(-1), y
            if y.ndim == out.ndim - 1 and out.shape[-1] == 1:
                return out, y.unsqueeze(-1)
        return out, y

    @staticmethod
    def update(metrics: dict[str, M.Metric], out: torch.Tensor, y: torch.Tensor) -> None:
        """Accumulate a batch of (flat) outputs; no sync with the device."""
        for m in metrics.values():
            if isinstance(m.metric, Perplexity):  # it takes [B, T, V]: the flat tokens as one sequence
                m.update(out.unsqueeze(0), y.unsqueeze(0))
            else:
                m.update(out, y)

    @staticmethod
    def compute(metrics: dict[str, M.Metric], prefix: str) -> dict[str, float]:
        values = {f"{prefix}_{name}": m.compute() for name, m in metrics.items()}
        for m in metrics.values():
            m.reset()
        return values

    def to(self, device: torch.device) -> Task:
        for m in (*self.metrics.values(), *self.train_metrics.values()):
            m.metric.to(device)
        if isinstance(self.loss_fn, torch.nn.Module):
            self.loss_fn.to(device)
        return self


def build_loss(cfg) -> Callable:
    """The loss callable from `task.loss` (`_target_` and its arguments)."""
    node = OmegaConf.to_container(cfg.task.loss, resolve=True)
    if not isinstance(node, dict) or "_target_" not in node:
        raise ConfigError(f"task.loss of task={cfg.task.name} has no _target_. Name a loss, e.g. "
                          f"`task.loss._target_=torch.nn.MSELoss`.")
    try:
        loss = instantiate(node, _convert_="all")
    except Exception as exc:
        raise ConfigError(f"task.loss: cannot build {node['_target_']}: {instantiate_error(exc)}. Fix "
                          f"task.loss._target_ or its arguments.") from None
    if not callable(loss):
        raise ConfigError(f"task.loss: {node['_target_']} gave a {type(loss).__name__}, which is not callable. "
                          f"Name a loss class (torch.nn.MSELoss) or a function (outputs, targets) -> scalar.")
    return loss


def build(cfg) -> Task:
    """The task of a checked config (data.check_data has filled the data's sizes)."""
    fill_objective(cfg)
    specs = metric_specs(cfg)
    objective = M.objective(cfg, specs)
    train = {name: M.build(name, node, cfg.task.kind, *_sizes(cfg), _ignore_index(cfg))
             for name, node in (OmegaConf.to_container(cfg.task.metrics, resolve=True) or {}).items()
             if specs[name].train}
    return Task(cfg.task.kind, build_loss(cfg), specs, objective, train)


def probe(the_task: Task, cfg) -> None:
    """A blank batch of the task's outputs and targets through the loss and every metric,
    before any run: a loss or a torchmetrics class that does not fit the task (a
    regression metric on class logits) is one line naming it, not a crash in epoch 1."""
    from ablate.model import probe as model_probe
    _, want, _ = model_probe(cfg)
    gen = torch.Generator().manual_seed(0)  # its own stream: the runs' seeded ones stay untouched
    out = torch.randn(want, generator=gen)  # random, not zeros: a misfit shows only on varied values
    if the_task.kind == "regression":
        y = torch.randn(want, generator=gen)
    else:  # class indices: one per sample, or per position
        y = torch.randint(0, want[-1], want[:-1], generator=gen)
    out, y = the_task.flat(out, y)
    try:
        the_task.loss_fn(out, y)
    except Exception as exc:
        raise ConfigError(f"task.loss ({cfg.task.loss._target_}) does not take task={cfg.task.name}'s outputs "
                          f"{tuple(out.shape)} and targets {tuple(y.shape)}: {one_line(exc)[:160]}. Pick a loss for "
                          f"this task.") from None
    for name, m in the_task.metrics.items():
        try:
            the_task.update({name: m}, out, y)
        except Exception as exc:
            raise ConfigError(f"task.metrics.{name} ({type(m.metric).__name__}) does not take task="
                              f"{cfg.task.name}'s outputs {tuple(out.shape)} and targets {tuple(y.shape)}: "
                              f"{one_line(exc)[:160]}. Remove it (`~task.metrics.{name}`) or pick a metric for "
                              f"this task.") from None
        finally:
            m.reset()
