"""Engine: the one training loop every job runs, whatever launched it."""
from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ablate.augment import Augment
from ablate.data import Data
from ablate.errors import ConfigError, DataError
from ablate.schema import SEED_SOURCES
from ablate.task import Task


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is invalid: no CUDA device is visible. Fix it with `device=cpu`.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # numpy takes 32 bits; a derived seed has 64
    torch.manual_seed(seed)  # also seeds every CUDA device


SOURCES = SEED_SOURCES


def coupled(cfg) -> bool:
    """Whether the run draws common random numbers across arms (`seeds.common`)."""
    return bool((cfg.get("seeds") or {}).get("common", False))


def source_seeds(cfg) -> dict[str, int] | None:
    """Each source's seed (`seeds.<source>`, else `seed`) when the sources draw from
    streams of their own: under common random numbers (`seeds.common`, the default) or
    when any is set. None for the seed study's protocol (`seeds.common=false`, none
    set), where one stream seeded by `seed` drives them all, as it always did."""
    given = {k: v for k, v in (cfg.get("seeds") or {}).items() if k in SOURCES and v is not None}
    if not given and not coupled(cfg):
        return None
    return {s: int(given.get(s, cfg.seed)) for s in SOURCES}


def derived_seed(*parts: int | str) -> int:
    """A 64-bit seed from numbers and names: numpy's SeedSequence over a SHA-256 of the
    parts, so distinct parts (negative and huge numbers included) give distinct streams,
    and `derived_seed(3, "data")` and `derived_seed(3, "augment")` are independent."""
    digest = hashlib.sha256(json.dumps(parts).encode()).digest()
    return int(np.random.SeedSequence(int.from_bytes(digest, "little")).generate_state(2, np.uint32).view(np.uint64)[0])


def stream_seed(cfg, source: str) -> int:
    """The seed that starts `source`'s stream (see source_seeds, which must not be None).
    Under common random numbers each source's stream is its own, derived from its seed
    and its name, so one seed's batch order and augmentation draws are not one sequence
    read twice. With `seeds.common=false` and sources set, each stream is seeded by the
    number as given (how such runs always ran)."""
    seed = source_seeds(cfg)[source]
    return derived_seed(seed, source) if coupled(cfg) else seed


def streams(cfg, device: torch.device) -> dict[str, torch.Generator]:
    """Generators of their own for the data order and the augmentation draws, when the
    sources are split; empty otherwise (both then draw from torch's global stream)."""
    if source_seeds(cfg) is None:
        return {}
    return {s: torch.Generator(device=device).manual_seed(stream_seed(cfg, s)) for s in ("data", "augment")}


@dataclass
class State:
    """Everything a training job needs to continue after a given epoch."""
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: object
    per_batch: bool
    epoch: int = 0                    # last completed epoch (1-based)
    best: float = math.nan            # the objective's best value so far on the choosing split (val, else test)
    best_epoch: int = 0
    history: list = field(default_factory=list)
    streams: dict = field(default_factory=dict)  # source -> torch.Generator, when the sources are split
    # early stopping (train.early_stopping): the best value by at least min_delta, the
    # epochs since, and the epoch it stopped at (0: not stopped). In the checkpoint.
    stop_best: float = math.nan
    wait: int = 0
    stopped_epoch: int = 0


@torch.inference_mode()
def nonfinite_item(split, batch_size: int) -> None:
    """Raise DataError naming the first training item whose input or target holds NaN or
    inf. A set held in memory was scanned before any run (data.checks); a streamed one is
    read here, once, when training diverges, so the error is the data's, not the lr's."""
    seen = 0
    for x, y in split.batches(batch_size, shuffle=False):
        for what, t in (("input", x), ("target", y)):
            if t.is_floating_point() and not (ok := torch.isfinite(t.reshape(len(t), -1)).all(1)).all():
                i = seen + int((~ok).nonzero()[0])
                raise DataError(f"the {what} of training item {i} holds NaN or inf (found after training diverged; "
                                f"a streamed set is read as it trains). Fix or drop those samples in the data set.")
        seen += len(x)


@torch.inference_mode()
def evaluate(model: nn.Module, split, task: Task, batch_size: int, prefix: str = "test") -> dict[str, float]:
    """`loss` (the task's loss, averaged over batches weighted by their size) and every
    evaluation metric of the task as `<prefix>_<name>`, over a whole split."""
    model.eval()
    dev = next(model.parameters()).device
    loss = torch.zeros((), device=dev)
    for x, y in split.batches(batch_size, shuffle=False):
        out, y = task.flat(model(x), y)
        loss += task.loss_fn(out, y) * len(x)
        task.update(task.metrics, out, y)
    return {"loss": loss.item() / len(split), **task.compute(task.metrics, prefix)}


def train_epoch(state: State, data: Data, augment: Augment, task: Task, batch_size: int, bar) -> dict[str, float]:
    """One pass over the shuffled training split; returns the mean loss (`loss`) and the
    task's train metrics, accumulated over the batches as the model changed."""
    model, opt = state.model, state.opt
    model.train()
    n = len(data.train)
    dev = next(model.parameters()).device
    loss_sum = torch.zeros((), device=dev)
    seen = 0
    for b, (x, y) in enumerate(data.train.batches(batch_size, shuffle=True, generator=state.streams.get("data"))):
        if augment.active:
            x = augment(x)
        out, y = task.flat(model(x), y)
        loss = task.loss_fn(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if state.per_batch:
            state.sched.step()
        # Accumulate on the device; reading .item() every batch would sync a GPU.
        loss_sum += loss.detach() * len(x)
        task.update(task.train_metrics, out.detach(), y)
        seen += len(x)
        if bar is not None:
            bar.update(1)
            if b % 50 == 0 or seen == n:
                bar.set_postfix_str(f"Loss={loss.item():.4f} Batch_id={b}", refresh=False)
    return {"loss": loss_sum.item() / n, **task.compute(task.train_metrics, "train")}


def _line(epoch: int, epochs: int, train: dict, test: dict, task: Task, n_test: int, lr: float, seconds: float,
          val: dict | None = None) -> str:
    """The epoch's line; for accuracy, the seed's "Accuracy: correct/N (x%)" form."""
    def fmt(values: dict, prefix: str) -> str:
        return " ".join(f"{k[len(prefix) + 1:]} {v:.4f}" if task.metrics[k[len(prefix) + 1:]].unit != "%"
                        else f"{k[len(prefix) + 1:]} {v:.2f}%" for k, v in values.items() if k != "loss")
    test_part = fmt(test, "test")
    if "test_acc" in test and task.kind == "classification":
        test_part = f"Accuracy: {round(test['test_acc'] * n_test / 100)}/{n_test} ({test['test_acc']:.2f}%)"
        rest = fmt({k: v for k, v in test.items() if k != "test_acc"}, "test")
        test_part += f", {rest}" if rest else ""
    val_part = f"val loss {val['loss']:.4f} {fmt(val, 'val')} | " if val is not None else ""
    return (f"epoch {epoch}/{epochs}: train loss {train['loss']:.4f} {fmt(train, 'train')} | {val_part}"
            f"Test set: Average loss: {test['loss']:.4f}, {test_part} | lr {lr:.5f} | {seconds:.1f}s")


def stops(state: State, value: float, objective, patience: int, min_delta: float) -> bool:
    """Early stopping, as Lightning's EarlyStopping: an epoch improves when it beats the
    best so far by more than min_delta (in the objective's direction); after `patience`
    epochs without one, training stops."""
    if math.isnan(state.stop_best) or objective.sign * (value - state.stop_best) > min_delta:
        state.stop_best, state.wait = value, 0
    else:
        state.wait += 1
    return state.wait >= patience


def fit(cfg, data: Data, state: State, task: Task, on_epoch: Callable[[State, dict], None] | None = None,
        progress: bool = True) -> State:
    """Train from state.epoch + 1 to train.epochs, evaluating on the validation split
    (when the data has one) and the test split after every epoch; `on_epoch` gets each
    epoch's metrics (logging, checkpoints). The validation split, else the test split,
    chooses: the best epoch, the plateau scheduler's steps and early stopping."""
    t = cfg.train
    augment = Augment(cfg.augmentation, data.mean, data.std, generator=state.streams.get("augment"))
    batches = -(-len(data.train) // t.batch_size)
    objective = task.objective
    early = t.get("early_stopping") or {}
    patience = early.get("patience")
    for epoch in range(state.epoch + 1, t.epochs + 1):
        if state.stopped_epoch:  # resumed after it had stopped early
            break
        lr = state.opt.param_groups[0]["lr"]
        start = time.perf_counter()
        with tqdm(total=batches, desc=f"epoch {epoch}/{t.epochs}", disable=not progress,
                  mininterval=0.5, dynamic_ncols=True, leave=False) as bar:
            train = train_epoch(state, data, augment, task, t.batch_size, bar if progress else None)
        seconds = time.perf_counter() - start
        if not math.isfinite(train["loss"]):  # checked once an epoch: no per-batch sync
            nonfinite_item(data.train, t.eval_batch_size)  # a streamed set's NaN: a data error, not the lr
            raise FloatingPointError(f"training diverged in epoch {epoch}: train loss is {train['loss']}. "
                                     f"Lower train.lr (now {t.lr}).")
        val = evaluate(state.model, data.val, task, t.eval_batch_size, "val") if data.val is not None else None
        test = evaluate(state.model, data.test, task, t.eval_batch_size)
        chooser = test if val is None else val
        if state.sched is not None and not state.per_batch:
            if isinstance(state.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                state.sched.step(chooser["loss"])
            else:
                state.sched.step()
        state.epoch = epoch
        value = chooser[objective.selector]
        if math.isnan(state.best) or objective.better(value, state.best):
            state.best, state.best_epoch = value, epoch
        if patience is not None and stops(state, value, objective, patience, early.get("min_delta") or 0.0):
            state.stopped_epoch = epoch
        metrics = {"train_loss": train["loss"], **{k: v for k, v in train.items() if k != "loss"},
                   **({"val_loss": val["loss"], **{k: v for k, v in val.items() if k != "loss"}} if val else {}),
                   "test_loss": test["loss"], **{k: v for k, v in test.items() if k != "loss"},
                   "lr": lr, "epoch_seconds": seconds}
        state.history.append({"epoch": epoch, **metrics})
        tqdm.write(_line(epoch, t.epochs, train, test, task, len(data.test), lr, seconds, val))
        if state.stopped_epoch:
            tqdm.write(f"early stopping after epoch {epoch}: {objective.selector} did not improve by more than "
                       f"{early.get('min_delta') or 0.0} for {patience} epochs (best epoch {state.best_epoch})")
        if on_epoch is not None:
            on_epoch(state, metrics)
    return state
