"""Metrics and the objective: what a run is scored by, and which way is better.

A metric is a torchmetrics `Metric` (accumulated batch by batch on the device,
computed once an epoch) with a name, a direction and the range its values can take.
Built-ins cover the usual tasks; any torchmetrics class can be named by `_target_`.

    name   what                                   goal  bounds     tasks
    acc    accuracy, %                            max   [0, 100]   classification, sequence (per token)
    f1     macro-averaged F1, %                   max   [0, 100]   classification
    mse    mean squared error                     min   [0, inf)   regression
    rmse   root mean squared error                min   [0, inf)   regression
    mae    mean absolute error                    min   [0, inf)   regression
    r2     coefficient of determination R²        max   (-inf, 1]  regression
    bpc    bits per token (character), log2 ppl   min   [0, inf)   sequence
    ppl    perplexity                             min   [1, inf)   sequence

The objective (`objective: {metric, goal, select}`) picks one of the task's metrics on
the test split: its value at the final epoch (`select: final`) or at its best epoch
(`select: best`, chosen on the test set, so optimistic). It is the run's summary,
the value returned to Hydra's sweepers, and what every report, adaptive policy and
greedy path compares. Runs carry it as `ablate.objective.*` tags.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torchmetrics
from torchmetrics.text import Perplexity

from ablate.errors import ConfigError, instantiate_error
from ablate.schema import Goal, Select

GOALS = tuple(g.value for g in Goal)         # a metric node's own `goal`, an app's objective: untyped
SELECTS = tuple(s.value for s in Select)
TAG = "ablate.objective"  # tags: ablate.objective.{metric,goal,select,bounds,label,unit}


class BitsPerToken(Perplexity):
    """log2 of torchmetrics' Perplexity: the mean cross-entropy in bits per token
    (bits per character for a character-level model). Takes logits [N, T, V] and
    targets [N, T], as Perplexity does; `ignore_index` positions are left out."""

    higher_is_better = False
    plot_lower_bound = 0.0
    plot_upper_bound = None

    def compute(self) -> torch.Tensor:
        return torch.log2(super().compute())


@dataclass(frozen=True)
class Builtin:
    label: str
    goal: str
    bounds: tuple[float | None, float | None]
    unit: str
    tasks: tuple[str, ...]
    train: bool  # cheap enough to accumulate over the training batches as well


BUILTINS: dict[str, Builtin] = {
    "acc": Builtin("accuracy", "max", (0.0, 100.0), "%", ("classification", "sequence"), True),
    "f1": Builtin("macro F1", "max", (0.0, 100.0), "%", ("classification",), False),
    "mse": Builtin("MSE", "min", (0.0, None), "", ("regression",), True),
    "rmse": Builtin("RMSE", "min", (0.0, None), "", ("regression",), True),
    "mae": Builtin("MAE", "min", (0.0, None), "", ("regression",), True),
    "r2": Builtin("R²", "max", (None, 1.0), "", ("regression",), False),
    "bpc": Builtin("bits per token", "min", (0.0, None), "", ("sequence",), True),
    "ppl": Builtin("perplexity", "min", (1.0, None), "", ("sequence",), False),
}


def _builtin(name: str, kind: str, classes: int | None, outputs: int | None, ignore_index: int | None):
    """The torchmetrics object behind a built-in. validate_args=False: the checks run
    torch.unique on every batch (a sync, and ~100 us a batch on CPU)."""
    from torchmetrics import classification as C
    from torchmetrics import regression as R
    ignore = {"ignore_index": ignore_index} if ignore_index is not None else {}
    if name == "acc":
        return C.MulticlassAccuracy(classes, average="micro", validate_args=False, **ignore)
    if name == "f1":
        return C.MulticlassF1Score(classes, average="macro", validate_args=False, **ignore)
    if name in ("mse", "rmse"):
        return R.MeanSquaredError(squared=name == "mse", num_outputs=outputs or 1)
    if name == "mae":
        return R.MeanAbsoluteError(num_outputs=outputs or 1)
    if name == "r2":
        return R.R2Score(multioutput="uniform_average") if (outputs or 1) > 1 else R.R2Score()
    if name == "bpc":
        return BitsPerToken(**ignore)
    if name == "ppl":
        return Perplexity(**ignore)
    raise AssertionError(name)


@dataclass
class Metric:
    """One named metric of a task: the torchmetrics object that computes it, its
    direction (`goal`), the range of its values (`bounds`, in its reported units;
    None where it has no end), and a multiplier to those units (`scale`: 100 for %)."""
    name: str
    metric: torchmetrics.Metric
    goal: str
    bounds: tuple[float | None, float | None]
    label: str
    unit: str = ""
    scale: float = 1.0
    train: bool = False

    def update(self, out: torch.Tensor, y: torch.Tensor) -> None:
        self.metric.update(out, y)

    def compute(self) -> float:
        value = self.metric.compute()
        return float(value.mean()) * self.scale  # a vector (one per output) is averaged

    def reset(self) -> None:
        self.metric.reset()


def build(name: str, node: Mapping | None, kind: str, classes: int | None, outputs: int | None,
          ignore_index: int | None) -> Metric:
    """A metric from its config node: `{}` (or null) for a built-in of that name;
    `{_target_: torchmetrics...., <its arguments>}` for any torchmetrics Metric, with
    ablate's own keys `goal`, `bounds`, `scale`, `label`, `train` beside the arguments.
    Raises ConfigError, naming the key, for anything it cannot build."""
    from hydra.utils import instantiate

    node = dict(node or {})
    own = {k: node.pop(k) for k in ("goal", "bounds", "scale", "label", "train", "unit") if k in node}
    where = f"task.metrics.{name}"
    if "_target_" not in node:
        if node:
            raise ConfigError(f"{where}: {', '.join(node)} given without _target_. A built-in metric takes no "
                              f"arguments; name a torchmetrics class with `_target_` to pass them.")
        if name not in BUILTINS:
            raise ConfigError(f"{where}: no built-in metric {name!r}. Use one of {', '.join(BUILTINS)}, or name a "
                              f"torchmetrics Metric: `+task.metrics.{name}={{_target_: torchmetrics....}}`.")
        b = BUILTINS[name]
        if kind not in b.tasks:
            raise ConfigError(f"{where}: {b.label} is a metric of {' or '.join(b.tasks)} tasks, not of task={kind}. "
                              f"Remove it with `~task.metrics.{name}` or pick another task.")
        metric = _builtin(name, kind, classes, outputs, ignore_index)
        out = Metric(name, metric, b.goal, b.bounds, b.label, b.unit, 100.0 if b.unit == "%" else 1.0, b.train)
    else:
        try:
            metric = instantiate(node, _convert_="all")
        except Exception as exc:
            raise ConfigError(f"{where}: cannot build {node['_target_']}: {instantiate_error(exc)}. Fix its "
                              f"_target_ or arguments.") from None
        if not isinstance(metric, torchmetrics.Metric):
            raise ConfigError(f"{where}: {node['_target_']} gave a {type(metric).__name__}, not a torchmetrics "
                              f"Metric. Name a torchmetrics class (or a subclass of torchmetrics.Metric).")
        scale = float(own.get("scale", 1.0))
        # unbounded unless `bounds` says otherwise: torchmetrics' plot_lower/upper_bound are plot
        # hints (MatthewsCorrCoef's lower one is 0; MCC reaches -1), and a wrong cut hides an effect
        bounds = (None, None)
        hib = getattr(metric, "higher_is_better", None)
        out = Metric(name, metric, "max" if hib else "min", bounds, own.get("label", name), own.get("unit", ""),
                     scale, bool(own.get("train", False)))
        if hib is None and "goal" not in own:
            raise ConfigError(f"{where}: {node['_target_']} does not say which way is better "
                              f"(higher_is_better is None). Say it with `task.metrics.{name}.goal=max` (or min).")
    if "goal" in own:
        if own["goal"] not in GOALS:
            raise ConfigError(f"{where}.goal={own['goal']!r} is invalid: must be max or min.")
        known = out.goal if "_target_" not in node or getattr(out.metric, "higher_is_better", None) is not None \
            else None
        if known is not None and own["goal"] != known:
            raise ConfigError(f"{where}.goal={own['goal']}: {out.label} is better when "
                              f"{'higher' if known == 'max' else 'lower'}; a metric's direction is its own. "
                              f"Remove the goal, or define a metric that means the other thing.")
        out.goal = own["goal"]
    if "bounds" in own:
        b = own["bounds"]
        if not (isinstance(b, (list, tuple)) and len(b) == 2):
            raise ConfigError(f"{where}.bounds={b!r} is invalid: give [low, high], null for no end.")
        out.bounds = (None if b[0] is None else float(b[0]), None if b[1] is None else float(b[1]))
    if "label" in own:
        out.label = str(own["label"])
    if "train" in own:
        out.train = bool(own["train"])
    return out


# ----------------------------------------------------------------------------- the objective

def _bounds_text(bounds) -> str:
    return ",".join("" if b is None else repr(float(b)) for b in bounds)


@dataclass(frozen=True)
class Objective:
    """What a study optimises: a task metric on the test split, its direction, and
    which epoch's value counts. `bounds` are the metric's own, in its units.
    `chosen_on` is the split that chooses (the best epoch, a plateau's steps, early
    stopping, adaptive stops, racing and greedy steps): `val` when the data has a
    validation split, else `test` (and the test numbers are then optimistic)."""
    metric: str = "acc"
    goal: str = "max"
    select: str = "final"
    bounds: tuple[float | None, float | None] = (0.0, 100.0)
    label: str = "accuracy"
    unit: str = "%"
    split: str = "test"   # the engine's metrics are per split; "none": a user's loop names them whole
    chosen_on: str = "test"

    @property
    def history(self) -> str:
        """The per-epoch metric: `test_acc` (or a user loop's own name, `val_loss`)."""
        return self.metric if self.split == "none" else f"{self.split}_{self.metric}"

    @property
    def column(self) -> str:
        """The run's summary metric in MLflow: `final_test_acc`, `best_test_rmse`."""
        return f"{self.select}_{self.history}"

    @property
    def on_val(self) -> str:
        """The history's validation counterpart: `val_acc` for `test_acc` (a user loop's
        `test_acc` or `test/acc` too); the history itself for a user loop's metric of
        another name."""
        if self.split == "none":  # `test_acc` -> `val_acc`, Lightning's `test/acc` -> `val/acc`
            return f"val{self.metric[4:]}" if self.metric.startswith(("test_", "test/")) else self.metric
        return f"val_{self.metric}"

    @property
    def selector(self) -> str:
        """The per-epoch metric that chooses: `on_val` when a validation split chooses,
        else the history's own."""
        return self.on_val if self.chosen_on == "val" else self.history

    @property
    def chosen_words(self) -> str:
        """How a `best` value's epoch was chosen, in words, with its caveat."""
        if self.chosen_on == "val":
            return "its epoch was chosen on the validation split"
        return "its epoch was chosen on the test set, so it is optimistic"

    @property
    def decides(self) -> str:
        """The summary metric that adaptive stopping, racing and the greedy path decide
        on: `final_val_acc` with a validation split; the column without one."""
        return f"{self.select}_{self.selector}"

    @property
    def other_select(self) -> str:
        """The selection shown beside the objective's: best beside final, final beside best."""
        return "best" if self.select == "final" else "final"

    @property
    def other(self) -> str:
        """The other selection's summary metric, shown beside."""
        return f"{self.other_select}_{self.history}"

    @property
    def sign(self) -> float:
        """+1 where higher is better, -1 where lower is: sign * delta > 0 is an improvement."""
        return 1.0 if self.goal == "max" else -1.0

    @property
    def delta_bounds(self) -> tuple[float | None, float | None]:
        """The range a difference of two values can take: [lo - hi, hi - lo], or open."""
        lo, hi = self.bounds
        if lo is None or hi is None:
            return (None, None)
        return (lo - hi, hi - lo)

    def better(self, a: float, b: float) -> bool:
        """True if value a is strictly better than b."""
        return (a > b) if self.goal == "max" else (a < b)

    def best(self, values):
        return max(values) if self.goal == "max" else min(values)

    @property
    def direction(self) -> str:
        return "higher is better" if self.goal == "max" else "lower is better"

    @property
    def units(self) -> str:
        return {"%": "pp", "": ""}.get(self.unit, self.unit)

    def named(self, select: str | None = None) -> str:
        """`final test accuracy`, `best RMSE`: the selection, the split (an engine's), the label."""
        split = "" if self.split == "none" else f" {self.split}"
        return f"{select or self.select}{split} {self.label}"

    def describe(self) -> str:
        """`final test accuracy (%), higher is better`."""
        unit = f" ({self.unit})" if self.unit else ""
        split = "" if self.split == "none" else f" {self.split}"
        return f"{self.select}{split} {self.label}{unit}, {self.direction}"

    def tags(self) -> dict[str, str]:
        return {f"{TAG}.metric": self.metric, f"{TAG}.goal": self.goal, f"{TAG}.select": self.select,
                f"{TAG}.bounds": _bounds_text(self.bounds), f"{TAG}.label": self.label, f"{TAG}.unit": self.unit,
                f"{TAG}.split": self.split, f"{TAG}.chosen_on": self.chosen_on}

    @classmethod
    def from_tags(cls, tags: Mapping) -> Objective:
        """From a run's tags; runs from before objectives existed were scored by final
        test accuracy, higher is better."""
        get = lambda k: tags.get(f"{TAG}.{k}")  # noqa: E731
        if get("metric") is None or (isinstance(get("metric"), float) and math.isnan(get("metric"))):
            return cls()
        bounds = tuple(None if b == "" else float(b) for b in str(get("bounds") or ",").split(","))
        return cls(str(get("metric")), str(get("goal")), str(get("select")), bounds,  # type: ignore[arg-type]
                   str(get("label") or get("metric")), "" if get("unit") in (None, "nan") else str(get("unit")),
                   str(get("split") or "test"), str(get("chosen_on") or "test"))

    @classmethod
    def from_runs(cls, runs) -> Objective:
        """The one objective of a DataFrame of runs (mlflow.search_runs' columns).
        Raises ConfigError if the runs were scored by different objectives."""
        col = f"tags.{TAG}.metric"
        if col not in runs or runs[col].isna().all():
            return cls()
        keys = [c for c in runs.columns if c.startswith(f"tags.{TAG}.")]
        distinct = runs[keys].fillna("")
        if f"tags.{TAG}.chosen_on" in distinct:  # runs from before the tag were chosen on test
            distinct[f"tags.{TAG}.chosen_on"] = distinct[f"tags.{TAG}.chosen_on"].replace("", "test")
        distinct = distinct.drop_duplicates()
        if len(distinct) > 1:
            seen = ", ".join(f"{r[col]} (" + ", ".join(f"{k[len('tags.' + TAG) + 1:]} {r[k] or '-'}" for k in keys
                                                       if k != col) + ")" for _, r in distinct.iterrows())
            raise ConfigError(f"these runs were scored by different objectives ({seen}); a report compares one. "
                              f"Narrow the runs with --filter or --sweep-id.")
        row = distinct.iloc[0]
        return cls.from_tags({k[len("tags."):]: (v if v != "" else None) for k, v in row.items()})


def objective(cfg, metrics: Mapping[str, Metric]) -> Objective:
    """The config's objective, checked against the task's metrics (task.metric_specs).
    Raises ConfigError naming the key."""
    o = cfg.objective
    if o.metric not in metrics:
        raise ConfigError(f"objective.metric={o.metric!r} is not one of task={cfg.task.name}'s metrics "
                          f"({', '.join(metrics)}). Fix it with `objective.metric=<name>`, or add the metric "
                          f"under task.metrics.")
    m = metrics[o.metric]
    if o.goal is not None and o.goal != m.goal:
        raise ConfigError(f"objective.goal={o.goal}: {m.label} is better when "
                          f"{'higher' if m.goal == 'max' else 'lower'} (goal {m.goal}). Remove objective.goal, "
                          f"or set it to {m.goal}.")
    chosen_on = "test" if cfg.data.get("val") is None else "val"
    return Objective(o.metric, m.goal, o.select, m.bounds, m.label, m.unit, chosen_on=chosen_on)
