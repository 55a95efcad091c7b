"""What stops a job: Ctrl-C, SIGTERM (kill, scancel, a sweep stopping) and USR2
(submitit's preemption). SIGTERM becomes `Interrupted`; while a checkpoint is written
all three wait."""
from __future__ import annotations

import signal
from contextlib import contextmanager


class Interrupted(BaseException):
    """SIGTERM arrived (scancel, scontrol requeue, a sweep stopping): the run is closed
    as KILLED. A BaseException, as KeyboardInterrupt is, because it is not the job's
    failure: submitit then records no error result, and a requeued job resumes the run."""


def sigterm(signum, frame):
    raise Interrupted(f"signal {signum}")


@contextmanager
def signals_to(handler, *signals):
    """`signals` go to `handler` inside the block. Only the main thread may set handlers;
    elsewhere signals are left alone."""
    try:
        old = {s: signal.signal(s, handler) for s in signals}
    except ValueError:
        old = {}
    try:
        yield
    finally:
        for s, before in old.items():
            signal.signal(s, signal.SIG_DFL if before is None else before)


# What stops a job: Ctrl-C, SIGTERM (kill, scancel) and USR2 (submitit's preemption)
_STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


@contextmanager
def stops_held():
    """The signals that stop a job wait while a checkpoint is written, then reach their
    own handlers: torch.save turns an exception raised inside its writes into a
    RuntimeError (`unexpected pos ...`, seen in CI), and the run would close FAILED,
    never to resume, with a torn checkpoint."""
    pending = []
    try:
        with signals_to(lambda signum, frame: pending.append(signum), *_STOPS):
            yield
    finally:
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)
