"""Loading: a study's runs out of MLflow, as one DataFrame row per run, with notes on
the runs left out and why."""
from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from ablate import effects, source, tracking
from ablate.metrics import Objective


class ReportError(RuntimeError):
    """Nothing at all can be reported; the message says why."""


def load_runs(uri: str, experiment: str, sweep_id: str | None = None, run_filter: str = "",
              fingerprints: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Job runs (not sweep parents) as a DataFrame, and notes on runs left out."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise ReportError(f"No experiment {experiment!r} in {uri}. Experiments there: {names}. "
                          f"Pick one with --experiment.")
    if exp.lifecycle_stage == "deleted":
        raise ReportError(f"Experiment {experiment!r} was deleted in {uri} (it is in MLflow's trash, id "
                          f"{exp.experiment_id}): restore it with `mlflow experiments restore --experiment-id "
                          f"{exp.experiment_id}` to report on its runs.")
    filters = [f for f in (run_filter,) if f]
    if sweep_id:
        filters.append(f"tags.`{tracking.SWEEP_ID}` = '{sweep_id}'")
    df = tracking.search_runs(uri, [exp.experiment_id], " and ".join(filters))
    if df.empty:
        where = f"sweep {sweep_id}" if sweep_id else f"experiment {experiment!r}"
        raise ReportError(f"No runs in {where} ({uri}). Check --sweep-id / --filter.")
    if f"tags.{tracking.FINGERPRINT}" not in df:
        raise ReportError(f"The runs in {experiment!r} ({uri}) were not written by ablate (none has the tag "
                          f"{tracking.FINGERPRINT}), so their configs and seeds are unknown. Point --experiment or "
                          f"--filter at ablate's runs.")
    df = df[df.get("params.seed").notna()] if "params.seed" in df else df.iloc[:0]  # drop sweep parents
    df = effects.seeds_as_used(df)
    df = df[df[f"tags.{tracking.FINGERPRINT}"].notna()]  # runs of other tools in the same experiment
    if fingerprints is not None:
        df = df[df[f"tags.{tracking.FINGERPRINT}"].isin(fingerprints)]
    notes = []
    unfinished = df[df["status"] != "FINISHED"]
    for _, r in unfinished.iterrows():
        notes.append(f"left out {r['status']} run {r['run_id']} ({r.get('tags.mlflow.runName', '')})"
                     + (f": {r[f'tags.{tracking.ERROR}']}" if isinstance(r.get(f"tags.{tracking.ERROR}"), str) else ""))
    df = df[df["status"] == "FINISHED"]
    objective = Objective.from_runs(df)  # runs from before objectives: final test accuracy
    for metric in (objective.column, objective.other):
        col = f"metrics.{metric}"
        missing = df[col].isna() if col in df else pd.Series(True, index=df.index)
        for _, r in df[missing].iterrows():
            notes.append(f"left out run {r['run_id']}: it has no {metric} metric")
        df = df[~missing]
    before = len(df)
    df = effects.newest_per_config(df)
    if len(df) < before:
        notes.append(f"{before - len(df)} older duplicate run(s) of the same config left out")
    if df.empty:
        raise ReportError(f"No finished runs with {objective.column} and {objective.other} to report on. "
                          + " ".join(notes))
    notes += source.mixed(df)
    return df.reset_index(drop=True), notes


def design_of(client: MlflowClient, parent_id: str) -> dict | None:
    """The design.json a design sweep's parent run keeps, or None for a grid sweep."""
    import json
    import tempfile
    if tracking.DESIGN not in client.get_run(parent_id).data.tags:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(parent_id, tracking.DESIGN_FILE, tmp)).read_text())


def design_runs(client: MlflowClient, experiment_id: str, spec: dict, where: str = "") -> pd.DataFrame:
    """Every run of the design's configs, whatever its status and whichever sweep ran it;
    `where`: an MLflow filter string that narrows them (--filter)."""
    try:
        df = tracking.search_runs(client.tracking_uri, [experiment_id], where)
    except mlflow.exceptions.MlflowException as exc:
        raise ReportError(f"--filter {where!r}: {' '.join(str(exc).split())[:200]}") from None
    col = f"tags.{tracking.FINGERPRINT}"
    if df.empty or col not in df:
        raise ReportError(f"No runs of this design match --filter {where!r}." if where else
                          "No runs of this design in the store yet.")
    return effects.seeds_as_used(df[df[col].isin(list(spec["fingerprints"]))].reset_index(drop=True))


def find_parent(client: MlflowClient, experiment_id: str, sweep_id: str | None, design: str | None):
    query = f"tags.`{tracking.DESIGN}` = '{design}'" if design else f"tags.`{tracking.SWEEP_ID}` = '{sweep_id}'"
    query += " and tags.`ablate.jobs` != ''"  # the sweep's parent run, not its jobs
    found = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=50)
    # a design's newest sweep that finished, over a newer one that failed (a typo's)
    return next((r for r in found if r.info.status == "FINISHED"), found[0] if found else None)


def with_test_samples(runs: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """Runs from before `test_samples` was logged, given the test set's size by hand."""
    if n is None:
        return runs
    runs = runs.copy()
    runs["metrics.test_samples"] = runs.get("metrics.test_samples", pd.Series(math.nan, index=runs.index)).fillna(n)
    return runs
