"""Entry: one Hydra app wrapper for `python -m ablate` and `@ablate.main`: the task
function is marked as tracking its own jobs, and a user's mistake, Hydra's or ours, is
one line with exit 2 (a sweep's job raises it, so the sweep records it as failed)."""
from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
from typing import Any

from omegaconf.errors import OmegaConfBaseException

from ablate import errors, stops
from ablate.stops import Interrupted


def register_sweeper() -> None:
    """Hydra finds plugins by scanning the hydra_plugins namespace; registering the
    sweeper as well works however ablate was installed, for every app that imports it."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.ablate_sweeper.ablate_sweeper import AblationSweeper
    Plugins.instance().register(AblationSweeper)


def die_with_sweep(grace_s: float = 15.0) -> None:
    """In a parallel sweep's worker (a direct child of the sweep's process, as joblib's
    loky workers are): when that process is gone (kill -9), SIGTERM this one, so its run
    closes as KILLED and resumes on the rerun, and end it `grace_s` later whatever it
    is doing. Without this, loky's workers, reparented to init, trained on for good."""
    from ablate.tracking import ENV_SWEEP_PID
    sweep = os.environ.get(ENV_SWEEP_PID, "")
    if not sweep.isdigit() or int(sweep) != os.getppid() or getattr(die_with_sweep, "watching", False):
        return
    die_with_sweep.watching = True

    def watch() -> None:
        while os.getppid() == int(sweep):
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(143)
    threading.Thread(target=watch, name="ablate-die-with-sweep", daemon=True).start()


def task(fn):
    """`fn(cfg) -> float` as Hydra's task function: ablate's one-line errors; marked as
    tracking its own jobs, so the ablation sweeper does not wrap it (ablate.app)."""
    @functools.wraps(fn)
    def task_function(cfg) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        errors.report_hydras_errors()  # composed: from here on a crash is Hydra's to report
        die_with_sweep()
        try:
            return fn(cfg)
        except errors.AblateError as exc:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                raise  # the sweep records it as a failed job
            print(f"ablate: {exc}", file=sys.stderr)
            sys.exit(2)
        except (KeyboardInterrupt, Interrupted) as exc:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                raise  # the launcher's to handle (submitit requeues on it); the entry says it
            sys.exit(stops.stopped(exc))
        except Exception as exc:
            if (full := errors.disk_full(exc)) is None or HydraConfig.get().mode == RunMode.MULTIRUN:
                raise
            run = getattr(exc, "ablate_run", None)
            said = f"run {run} stopped" if run else "no run was started"
            print(f"ablate: the disk is full: {full}; {said}. Free some space and run the same command again: it "
                  f"resumes from the last checkpoint.", file=sys.stderr)
            sys.exit(1)
    task_function.__ablate_tracks__ = True
    return task_function


def app(task_function, config_path: str | None, config_name: str | None, version_base: str | None = "1.3"):
    """hydra.main around `task_function`, with Hydra's own errors (a misspelt option or
    key, an override that does not parse, -m with --cfg) as one line and exit 2."""
    import hydra
    from hydra.errors import HydraException
    register_sweeper()
    main = hydra.main(config_path=config_path, config_name=config_name, version_base=version_base)(task_function)

    @functools.wraps(task_function)
    def entry() -> Any:
        errors.raise_hydras_errors()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, stops.sigterm)  # a stop before any run exists is one line too
        try:
            return main()
        except (KeyboardInterrupt, Interrupted) as exc:  # composing, or a sweep: its jobs' runs are closed
            sys.exit(stops.stopped(exc))
        except ValueError as exc:  # Hydra's own check of its flags: `-m` with `--cfg`, say
            if errors.report_hydras_errors() or not str(exc).startswith("Only one of"):
                raise
            print(f"ablate: {exc}: give one of them (drop -m to print the config).", file=sys.stderr)
            sys.exit(2)
        except (HydraException, OmegaConfBaseException) as exc:
            if errors.report_hydras_errors():
                raise  # the user asked for Hydra's full stack traces
            print(f"ablate: {errors.from_hydra(exc)}", file=sys.stderr)
            sys.exit(2)
    return entry
