"""What stops a job: Ctrl-C, SIGTERM (kill, scancel, a sweep stopping) and USR2
(submitit's preemption). SIGTERM becomes `Interrupted`; while a checkpoint is written
all three wait."""
from __future__ import annotations

import signal
import sys
from contextlib import contextmanager


class Interrupted(BaseException):
    """SIGTERM arrived (scancel, scontrol requeue, a sweep stopping): the run is closed
    as KILLED. A BaseException, as KeyboardInterrupt is, because it is not the job's
    failure: submitit then records no error result, and a requeued job resumes the run."""


def sigterm(signum, frame):
    raise Interrupted(f"signal {signum}")


# What a stop closes beyond the job's own run: a sweep's parent run (ablate.callbacks
# adds its sweep here while it is open). Each takes the reason, returns what it closed.
ON_STOP: list = []


def stopped(exc: BaseException) -> int:
    """Ctrl-C or SIGTERM reached the top of `python -m ablate` (or an `ablate.main` app):
    close what is open, say so in one line, and return the exit code, 128 + the signal
    (130, 143), as a shell reports it. A sweep turns SIGTERM into KeyboardInterrupt (so
    joblib stops its workers) and marks it with `ablate_signal`."""
    term = isinstance(exc, Interrupted) or getattr(exc, "ablate_signal", None) == signal.SIGTERM
    name = "SIGTERM" if term else "SIGINT"
    closed = [what for close in list(ON_STOP) if (what := close(f"stopped by {name}"))]
    run = getattr(exc, "ablate_run", None)
    said = [*([f"run {run}"] if run else []), *closed]
    one = len(said) == 1
    tail = f"{' and '.join(said)} {'is' if one else 'are'} KILLED; rerun the same command to resume " \
           f"{'it' if one else 'them'}" if said else "no run was started"
    print(f"ablate: stopped by {name}: {tail}.", file=sys.stderr)
    return 143 if term else 130


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
