"""Who trains a run: the owner tag (host:pid) and heartbeat every job sets, whether that
owner still lives, and the runs closed because it does not (a sweep's parent after
kill -9; the later of two jobs that started one config together)."""
from __future__ import annotations

import os
import socket
import time

from mlflow.tracking import MlflowClient

from ablate.tracking import ERROR, HEARTBEAT, OWNER, find_runs


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_tags() -> dict[str, str]:
    return {OWNER: owner(), HEARTBEAT: str(int(time.time()))}


def _process_gone(tags: dict) -> str | None:
    """The owner's pid when it ran on this host and that process is gone; None when it
    lives (another user's live process included) or ran elsewhere."""
    host, _, pid = tags.get(OWNER, "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return pid
    except PermissionError:
        pass  # another user's live process
    return None


def alive(run, limit_s: float) -> tuple[bool, str]:
    """Whether a RUNNING run's trainer is still at it: its process, when it ran on this
    host; else its heartbeat (set every epoch), younger than `limit_s`."""
    if run.info.status != "RUNNING":
        return False, run.info.status
    tags = run.data.tags
    if (pid := _process_gone(tags)) is not None:
        return False, f"its process {pid} is gone"
    if tags.get(OWNER) == owner():
        return False, "this process"
    beat = time.time() - float(tags.get(HEARTBEAT, 0))
    if beat > limit_s:
        return False, f"no heartbeat for {beat:.0f} s"
    return True, f"trained by {tags.get(OWNER, '?')}, heartbeat {beat:.0f} s ago"


def owner_gone(run) -> str | None:
    """Why a RUNNING run's owner is known to be dead (its process on this host is gone),
    or None: alive, or elsewhere, where only a heartbeat could tell (a sweep's parent
    run has none, so one on another host is never closed from here)."""
    if run.info.status != "RUNNING" or (pid := _process_gone(run.data.tags)) is None:
        return None
    return f"its process {socket.gethostname()}:{pid} is gone (killed, or the machine restarted)"


def close_orphaned_sweeps(client: MlflowClient, experiment_id: str) -> list[str]:
    """Close, as KILLED with the reason in ablate.error, every sweep parent run of the
    experiment whose sweep process is gone (kill -9 of `python -m ablate -m`): found the
    next time a sweep starts. Returns the runs closed."""
    closed = []
    for r in client.search_runs([experiment_id], "attributes.status = 'RUNNING' and tags.`ablate.jobs` != ''",
                                max_results=1000):
        why = owner_gone(r)
        if why:
            client.set_tag(r.info.run_id, ERROR, f"closed when a later sweep started: {why}")
            client.set_terminated(r.info.run_id, "KILLED")
            closed.append(r.info.run_id)
    return closed


def first_claim(client: MlflowClient, experiment_id: str, fingerprint: str, mine, limit_s: float):
    """Two jobs that start one config together both create a run; the earlier run (by
    start time, then id) trains and the other backs off. Returns the live rival that
    goes first, or None when this run does."""
    key = (mine.info.start_time, mine.info.run_id)
    for r in find_runs(client, experiment_id, fingerprint):
        if r.info.run_id != mine.info.run_id and r.info.status == "RUNNING" and \
                (r.info.start_time, r.info.run_id) < key and alive(r, limit_s)[0]:
            return r
    return None
