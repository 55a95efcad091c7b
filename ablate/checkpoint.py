"""Checkpoints: per-epoch training state, written atomically, read without pickle code."""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from ablate.engine import State


def rng_state() -> dict:
    """Every RNG as tensors and primitives, so torch.load(weights_only=True) reads it."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write(payload, path: Path) -> None:
    """torch.save, atomically: a temp file in the same directory, fsync, then
    os.replace, so a crash midway leaves the previous checkpoint whole and no temp
    file behind. The one writer of ablate's checkpoints and a user loop's run.save."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(path: Path, state: State) -> None:
    """The engine's state at the end of an epoch (write: atomically)."""
    payload = {
        "epoch": state.epoch, "best": state.best, "best_epoch": state.best_epoch,
        "model": state.model.state_dict(), "opt": state.opt.state_dict(),
        "sched": state.sched.state_dict() if state.sched is not None else None,
        "history": state.history, "rng": rng_state(),
        "streams": {k: g.get_state() for k, g in state.streams.items()},
        "early_stopping": {"best": state.stop_best, "wait": state.wait, "stopped_epoch": state.stopped_epoch},
    }
    write(payload, path)


def load(path: Path, state: State) -> State:
    """Restore `state` in place. weights_only=True refuses pickled code."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state.model.load_state_dict(payload["model"])
    state.opt.load_state_dict(payload["opt"])
    if state.sched is not None and payload["sched"] is not None:
        state.sched.load_state_dict(payload["sched"])
    state.epoch, state.best, state.best_epoch = payload["epoch"], payload["best"], payload["best_epoch"]
    state.history = list(payload["history"])
    early = payload.get("early_stopping") or {}  # absent in checkpoints written before early stopping
    state.stop_best = early.get("best", float("nan"))
    state.wait, state.stopped_epoch = early.get("wait", 0), early.get("stopped_epoch", 0)
    set_rng_state(payload["rng"])
    for k, g in state.streams.items():
        g.set_state(payload.get("streams", {})[k])
    return state
