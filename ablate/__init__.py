"""ablate: ablation studies of small networks as Hydra configs, tracked in MLflow.

The package reads as the story of a job, then of a study:

    errors      the one-line mistakes a user can make (ConfigError, DataError), the hints
    schema      the types of ablate's own config keys (Hydra structured configs); unknown keys refused
    config      compose a job from conf/ (and --config-dir), check it, flatten it, fingerprint it
    identity    a user's config as its identity: every key, run-local values (output folders) out
    data        images, feature vectors or token ids: read, checked, held as tensors or streamed
    metrics     torchmetrics with a name, a direction and bounds; the objective
    task        classification, regression, sequence: a loss and metrics from config
    augment     batched crop, flip, rotate, erase on the training device
    kernels     CPU training kernels (the dropout mask, the fused conv block)
    model       a block list built into a CNN, or any nn.Module from `_target_`
    optim       the optimizer and scheduler from their `_target_` nodes (any torch.optim class)
    engine      the one training loop: batches -> task loss -> step; task metrics each epoch
    checkpoint  per-epoch state, written atomically (the one writer)
    tracking    the MLflow store: checks, run names, outages
    owners      who trains a run (host:pid, heartbeat), and closing runs whose owner is gone
    source      the code a result depends on: ablate's, the files of yours that run, libraries
    stops       what stops a job (Ctrl-C, SIGTERM, preemption), held while a checkpoint is written
    run         one run's life, whoever trains: claim or resume, log through an outage, close
                FINISHED/KILLED/FAILED (run.execute: the one lifecycle every job goes through)
    job         ablate's engine as the body of a run: check -> claim -> build -> fit -> close
    app         a user's own Hydra app as jobs: unchanged (Tier 0, tracked from outside) or
    study         under `@ablate.main` with a run handle (Tier 1: log, checkpoint, resume)
    entry       the one Hydra entry wrapper of `python -m ablate` and `ablate.main`
    preflight   every job of a sweep composed as the launcher will, checked before any starts
    callbacks   sweep-level work in Hydra's callback: pre-flight, parent run, summary, links
    rule        the one decision rule: Holm over comparisons, group-sequential over looks
    stats       each comparison's tests, intervals,
                equivalence, the detectable difference, Shapley values
    designs     ablation designs (baseline + factors) as jobs, and the contrasts each one asks
    adaptive    studies in rounds: seeds until decisive or settled, a greedy path
    sweep       what the ablation sweeper (hydra_plugins/ablate_sweeper, a thin plugin) does
    effects     a design's effects from its runs, judged by the rule; a factorial's Shapley values
    report      runs -> tables -> Markdown, HTML, CSV;  plots: the figures;  latex: paper tables
    ui          MLflow UI links that open on a sweep's runs
"""
import importlib

# The public names, loaded on first use: `import ablate` (and Hydra's plugin scan, which
# imports the sweeper and ablate.schema for every app) stays light; torch and MLflow
# load only when a job needs them.
_PUBLIC = {"compose": "ablate.config", "ConfigError": "ablate.errors", "DataError": "ablate.errors",
           "Result": "ablate.run", "train": "ablate.job", "build_model": "ablate.model",
           "param_count": "ablate.model", "Run": "ablate.study", "main": "ablate.study"}
__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'ablate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
