"""Where to look: MLflow UI links that open on a sweep's job runs, and `python -m ablate.ui`,
which serves the store with `mlflow ui` and prints them.

    python -m ablate.ui                      # the newest sweep in ./mlflow.db, on http://127.0.0.1:5000
    python -m ablate.ui --sweep-id 3f2a9c81d0e4 --port 5001

A fresh browser opens an experiment on its default view: runs folded under their sweep,
with Dataset, Source and Models columns and no metric. MLflow 3.15+ keeps shareable
views of the runs table as experiment tags (`mlflow.sharedViewState.<key>`, opened with
`?viewStateShareKey=<key>`): ablate writes one per sweep, with the sweep's job runs as
the filter, the swept params and the objective's summaries as columns, best first."""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from urllib.parse import quote

from mlflow.tracking import MlflowClient

from ablate import tracking
from ablate.metrics import Objective

SHARED_VIEW = "mlflow.sharedViewState."  # MLflow's experiment-tag prefix for a shared runs-table view
MAX_FILTER = 6000  # a tag value holds 8,000 characters; past this the filter names the sweep instead


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # MLflow UI's column key


def view_state(run_ids: list[str], sweep_id: str, params: list[str], objective: Objective | None = None) -> dict:
    """The runs table as it should open: these runs only (by id, so runs a rerun skipped
    are there too; by sweep id when there are too many), unfolded, the params that the
    sweep varied and the objective's summaries as columns, the best run first (by the
    objective's column and direction)."""
    objective = objective or Objective()
    ids = ", ".join(f"'{r}'" for r in run_ids)
    search = f"attributes.run_id IN ({ids})"
    if len(search) > MAX_FILTER:
        search = f"tags.`{tracking.SWEEP_ID}` = '{sweep_id}' and tags.`ablate.jobs` IS NULL"
    columns = [_column("tags", tracking.ARM) if p == "design.arm" else _column("params", p) for p in params]
    columns += [_column("metrics", m) for m in (objective.column, objective.other, "param_count")]
    return {"searchFilter": search, "orderByKey": _column("metrics", objective.column),
            "orderByAsc": objective.goal == "min",
            "startTime": "ALL", "lifecycleFilter": "Active", "selectedColumns": columns, "runListHidden": False}


def publish(client: MlflowClient, experiment_id: str, sweep_id: str, run_ids: list[str], params: list[str],
            objective: Objective | None = None) -> str:
    """Write the sweep's view as an experiment tag; returns its share key."""
    key = f"ablate-{sweep_id}"
    client.set_experiment_tag(experiment_id, SHARED_VIEW + key,
                              json.dumps(view_state(run_ids, sweep_id, params, objective)))
    return key


def links(base: str, experiment_id: str, key: str, run_ids: list[str]) -> dict[str, str]:
    base = base.rstrip("/")
    compare = quote(json.dumps(run_ids))
    return {"runs": f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}&compareRunsMode=TABLE",
            "compare": f"{base}/#/compare-runs?runs={compare}&experiments={quote(json.dumps([experiment_id]))}"}


def ui_base(uri: str, port: int = 5000, host: str = "127.0.0.1") -> tuple[str, bool]:
    """The UI's address, and whether `mlflow ui` must be started for it (a sqlite or file
    store) or the tracking server already is the UI."""
    if uri.startswith(("http://", "https://")):
        return uri, False
    return f"http://{host}:{port}", True


def shared_view(client: MlflowClient, experiment_id: str, sweep_id: str | None):
    """The share key and run ids of a sweep's view (the newest sweep's when no id is
    given), as the sweep wrote it when it ended; None when there is none."""
    query = "tags.`ablate.jobs` != ''" + (f" and tags.`{tracking.SWEEP_ID}` = '{sweep_id}'" if sweep_id else "")
    parents = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        return None
    key = f"ablate-{parents[0].data.tags[tracking.SWEEP_ID]}"
    state = client.get_experiment(experiment_id).tags.get(SHARED_VIEW + key)
    if state is None:  # a sweep that did not get to its end: its own job runs
        jobs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'",
                                  max_results=5000)
        ids = [r.info.run_id for r in jobs]
        objective = Objective.from_tags(jobs[0].data.tags) if jobs else None  # the jobs' tags say it
        return publish(client, experiment_id, parents[0].data.tags[tracking.SWEEP_ID], ids,
                       tracking.swept_keys(parents[0]), objective), ids
    runs = client.search_runs([experiment_id], json.loads(state)["searchFilter"], max_results=5000)
    return key, [r.info.run_id for r in runs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ablate.ui", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", default=None, help="default: sqlite:///./mlflow.db")
    ap.add_argument("--experiment", default="ablate")
    ap.add_argument("--sweep-id", default=None, help="default: the newest sweep")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--no-serve", action="store_true", help="print the links only")
    args = ap.parse_args(argv)
    uri = tracking.resolve_uri(args.tracking_uri)
    try:
        tracking.require_store(uri)
    except tracking.StoreError as exc:
        print(f"ablate.ui: {exc}", file=sys.stderr)
        return 2
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        print(f"ablate.ui: no experiment {args.experiment!r} in {uri}. Pick one with --experiment.", file=sys.stderr)
        return 2
    view = shared_view(client, exp.experiment_id, args.sweep_id)
    if view is None:
        which = f"sweep {args.sweep_id}" if args.sweep_id else "sweep"
        print(f"ablate.ui: no {which} in experiment {args.experiment!r} ({uri}).", file=sys.stderr)
        return 2
    key, ids = view
    port = args.port if args.no_serve or not ui_base(uri)[1] else free_port(args.host, args.port)
    base, serve = ui_base(uri, port, args.host)
    for name, url in links(base, exp.experiment_id, key, ids).items():
        print(f"{name}: {url}")
    if args.no_serve or not serve:
        return 0
    print(f"serving {uri} with `mlflow ui` on {base} (Ctrl-C stops it)", flush=True)
    return serve_ui(uri, args.host, port)


def free_port(host: str, wanted: int) -> int:
    """`wanted` if nothing listens there; else a free port, said in one line: links to a
    port another server holds would open that server's runs."""
    with socket.socket() as s:
        try:
            s.bind((host, wanted))
            return wanted
        except OSError:
            pass
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    print(f"ablate.ui: port {wanted} is in use (another server?); serving on port {port} instead "
          f"(--port chooses).", file=sys.stderr)
    return port


def serve_ui(uri: str, host: str, port: int) -> int:
    """`mlflow ui` from this interpreter (no activated environment needed), in a process
    group of its own, so that SIGTERM or Ctrl-C stops it and its workers with us."""
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
                             "--port", str(port), "--workers", "1"],  # one worker: 4 by default, for one user
                            start_new_session=True)

    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
