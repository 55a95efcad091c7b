"""ablate: ablation studies of small networks as Hydra configs, tracked in MLflow.

The package reads as the story of a job, then of a study:

    errors      the one-line mistakes a user can make (ConfigError, DataError)
    schema      the types of ablate's own config keys (Hydra structured configs); unknown keys refused
    config      compose a job from conf/ (and --config-dir), check it, flatten it, fingerprint it
    data        images, feature vectors or token ids: read, checked, held as tensors or streamed
    metrics     torchmetrics with a name, a direction and bounds; the objective
    task        classification, regression, sequence: a loss and metrics from config
    augment     batched crop, flip, rotate, erase on the training device
    kernels     CPU training kernels (the dropout mask, the fused conv block)
    model       a block list built into a CNN, or any nn.Module from `_target_`
    engine      the one training loop: batches -> task loss -> step; task metrics each epoch
    checkpoint  per-epoch state, written atomically
    tracking    the MLflow store: checks, run names, owners, outages
    run         one run's life: claim or resume, log through an outage, close FINISHED/KILLED/FAILED
    job         one job from config to MLflow: check -> claim -> build -> fit -> close
    study       your own training loop, `train(cfg, run) -> dict`, tracked like the engine's jobs
    callbacks   sweep-level work in Hydra's callback: pre-flight, parent run, summary, links
    stats       the one decision rule (Bonferroni over comparisons x looks), intervals, tests,
                equivalence, the detectable difference, Shapley values
    designs     ablation designs (baseline + factors) as jobs; the sweeper plugin beside
                the callbacks (hydra_plugins/ablate_sweeper) runs them
    adaptive    studies in rounds: seeds until decisive or settled, a greedy path
    effects     a design's effects from its runs, judged by the rule; a factorial's Shapley values
    report      runs -> tables -> Markdown, HTML, CSV;  plots: the figures;  latex: paper tables
    ui          MLflow UI links that open on a sweep's runs
"""
from ablate.config import compose
from ablate.errors import ConfigError, DataError
from ablate.job import Result, train
from ablate.model import build_model, param_count
from ablate.study import Run, main

__all__ = ["ConfigError", "DataError", "Result", "Run", "build_model", "compose", "main", "param_count", "train"]
__version__ = "0.1.0"
