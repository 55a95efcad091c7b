"""Adaptive studies: the sweeper runs in rounds, and the results so far decide the
next round's jobs.

    seeds until decisive  every arm gets `min` seeds; then each comparison whose
                          interval still spans zero and is wider than the target (in
                          the metric's units) gets one more seed on each of its arms,
                          round by round, up to `max`
    greedy_path           from the baseline (the source), each round tries every
                          remaining factor on the current config and keeps the one that
                          improves the objective most, paired over seeds (Fawcett &
                          Hoos' ablation); racing drops clearly worse candidates early

The rounds keep no state of their own. `run(jobs)` trains what is missing and returns
every result the store holds; each round looks only at the seeds it asked for. So a
study that is killed and started again replays its decisions from the stored results,
trains nothing twice, and ends where an uninterrupted one ends.

Looking at the data after every seed and stopping when it looks decisive would claim
too much. A comparison is therefore decisive by the report's own rule (stats.Rule):
Holm's step-down over every comparison, each p adjusted for the looks its policy allows
(min..max seeds) by a group-sequential boundary. Later looks only lower a comparison's
p (its smallest over the looks counts) and Holm's verdicts never undo one, so a
comparison that stops as decisive is reported clear, and the chance of any false claim
over the whole study stays at alpha. Racing drops a candidate only when it is worse
than the leader by the same rule, over every pair of candidates and every look.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ablate import stats
from ablate.designs import (  # SeedPolicy: a plan holds one
    BASELINE,
    Arm,
    Contrast,
    Design,
    DesignError,
    SeedPolicy,
    arm_of,
)
from ablate.metrics import Objective

Job = tuple[str, int]  # (arm name, seed)
RULE = "holm: comparisons, group-sequential over looks"  # how decisions are taken; recorded in design.json
# A round's jobs in, every stored result out: a [seed x arm] table of the metric, NaN
# where a run is missing or failed, and the set of (arm, seed) that failed.
Runner = Callable[[list[tuple[Arm, int]]], tuple[pd.DataFrame, set[Job]]]


def contrast_values(c: Contrast, table: pd.DataFrame) -> pd.Series:
    """A contrast per seed, over the seeds every arm of it has in `table` [seed x arm]."""
    sub = table.reindex(columns=list(c.arms)).to_numpy(dtype=float)
    ok = ~np.isnan(sub).any(axis=1)
    return pd.Series(sub[ok] @ np.array(c.signs), index=table.index[ok])


@dataclass
class Decision:
    comparison: str
    n: int
    delta: float
    lo: float
    hi: float
    status: str  # open, decisive, equivalent, precise, max, failed
    # the seed ids it was judged on (n of them): with a failed run these are not 0..n-1,
    # and the report re-judges on exactly these
    seeds: list[int] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """Why the comparison stopped; a precise interval that spans 0 still allows an
        effect as large as its far end (up to twice the half-width)."""
        far = max(abs(self.lo), abs(self.hi)) if not math.isnan(self.lo) else math.nan
        return {"open": f"still open at {self.n} seeds (the study was stopped)",
                "decisive": f"decisive at {self.n} seeds: the adjusted interval excludes 0",
                "equivalent": f"equivalent at {self.n} seeds: the adjusted interval lies inside ±sesoi",
                "precise": f"precise at {self.n} seeds: half-width {(self.hi - self.lo) / 2:.3g}; effects up to "
                           f"{far:.3g} remain possible",
                "max": f"max seeds ({self.n}) reached, interval still spans 0" if not math.isnan(self.lo) else
                       f"max seeds ({self.n}) reached with no spread observed: too few seeds for the exact "
                       f"sign-flip test to decide",
                "failed": f"runs of its arms failed: {self.n} paired seeds by the end"}[self.status]


def decide(policy: SeedPolicy, comps: list[Contrast], table: pd.DataFrame, failed: set[Job],
           sesoi: float | None = None, bounds=None) -> list[Decision]:
    """Each comparison's state after this look, by the report's rule over all of them
    and every look the policy allows. `sesoi`: the smallest effect of interest (for
    `until: settled`); `bounds`: the range of the contrast."""
    rule = stats.Rule(comparisons=len(comps), looks=policy.looks, first=policy.min)
    values = {c.name: contrast_values(c, table) for c in comps}
    judged: dict[str, stats.Comparison] = {}
    for c in comps:
        d = values[c.name]
        if len(d) >= 2:
            # "no spread" is judged against the arms' values, as the report judges it, not the contrast's
            scale = float(np.nanmax(np.abs(table.reindex(columns=list(c.arms)).to_numpy(dtype=float))))
            judged[c.name] = stats.paired(np.zeros(len(d)), d.to_numpy(), bounds, rule, sesoi, detect=False,
                                          scale=scale)
    # one family: Holm's step-down over every comparison at this look, as the report judges them
    judged = dict(zip(judged, rule.judge(list(judged.values())), strict=True))
    out = []
    for c in comps:
        d = values[c.name]
        n = len(d)
        if any(a == arm for a, _ in failed for arm in c.arms) and n < policy.min:
            out.append(Decision(c.name, n, math.nan, math.nan, math.nan, "failed"))
            continue
        if n < 2:
            out.append(Decision(c.name, n, math.nan, math.nan, math.nan, "open"))
            continue
        comp = judged[c.name]
        lo, hi = comp.ci_lo, comp.ci_hi
        # how precise: the half-width at Holm's first step (a clear effect's interval ends at 0,
        # which says its sign, not its precision); no spread: no interval to be narrow
        half = comp.half if not math.isnan(comp.half) else math.inf
        if n < policy.min:
            status = "open"
        elif policy.until in ("decisive", "settled") and comp.clear:
            status = "decisive"
        elif policy.until == "settled" and comp.equivalent:
            status = "equivalent"
        elif policy.until != "settled" and half <= policy.halfwidth:
            status = "precise"
        elif n >= policy.max:
            status = "max"
        else:
            status = "open"
        out.append(Decision(c.name, n, comp.delta, lo, hi, status, [int(s) for s in d.index]))
    return out


def _masked(table: pd.DataFrame, want: dict[str, int]) -> pd.DataFrame:
    """Only the seeds this round asked for: a replay sees what the first run saw."""
    cols = {a: table[a].where(table.index < want[a]) if a in table else pd.Series(dtype=float) for a in want}
    return pd.DataFrame(cols)


@dataclass
class SeedStudy:
    decisions: list[Decision]
    seeds: dict[str, int]  # arm -> seeds it took
    rounds: int

    def record(self) -> dict:
        # "rule": the decisions were taken by stats.Rule over comparisons x looks, as the report
        # judges (design.json files without it were decided over looks alone)
        return {"decisions": [{**asdict(d), "reason": d.reason} for d in self.decisions], "seeds": self.seeds,
                "rounds": self.rounds, "rule": RULE}


def seed_rounds(policy: SeedPolicy, arm_list: list[Arm], comps: list[Contrast], run: Runner,
                sesoi: float | None = None, bounds=None) -> SeedStudy:
    """`min` seeds for every arm, then one more seed a round for the arms of each
    comparison that is still open, until none is or all are at `max`."""
    want = {a.name: policy.min for a in arm_list}
    by_name = {a.name: a for a in arm_list}
    rounds = 0
    while True:
        rounds += 1
        table, failed = run([(by_name[a], s) for a in want for s in range(want[a])])
        decisions = decide(policy, comps, _masked(table, want), failed, sesoi, bounds)
        grown = dict(want)
        for c, d in zip(comps, decisions, strict=True):
            if d.status == "open" and d.n >= policy.min:
                asked = min(want[a] for a in c.arms)  # more than d.n where a run of it failed
                for a in c.arms:
                    grown[a] = max(grown[a], min(asked + 1, policy.max))
        if grown == want:
            for d in decisions:  # nothing more to ask for: an open comparison lost seeds to failed runs
                if d.status == "open" and d.n >= 2:
                    d.status = "failed"
            return SeedStudy(decisions, want, rounds)
        want = grown


# ----------------------------------------------------------------------------- greedy path

@dataclass
class Candidate:
    factor: str
    gain: float   # mean over seeds of (current + factor) - current: an improvement when objective.sign * gain > 0
    lo: float     # 95% t-interval of the gain
    hi: float
    n: int
    dropped_at: int | None = None  # racing: the seed count at which it was dropped


@dataclass
class GreedyRound:
    current: tuple[str, ...]
    candidates: list[Candidate]
    chosen: str


@dataclass
class GreedyPath:
    path: tuple[str, ...]
    rounds: list[GreedyRound] = field(default_factory=list)

    def record(self) -> dict:
        return {"path": list(self.path), "rounds": [
            {"current": list(r.current), "chosen": r.chosen, "candidates": [asdict(c) for c in r.candidates]}
            for r in self.rounds]}


def _gain(table: pd.DataFrame, current: str, cand: str, bounds) -> tuple[float, float, float, int]:
    d = (table[cand] - table[current]).dropna()
    n = len(d)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    lo, hi = stats.t_interval(d.to_numpy(), bounds)
    return float(d.mean()), lo, hi, n


def greedy_path(design: Design, seeds: int, run: Runner, race: bool = False,
                objective: Objective | None = None,
                on_round: Callable[[GreedyRound], None] | None = None) -> GreedyPath:
    """Each round: every remaining factor on the current config, `seeds` seeds each,
    paired with the current config on the same seeds; keep the one whose mean gain
    improves the objective most (the largest gain where higher is better, the most
    negative where lower is). Racing starts every candidate at 2 seeds and adds one at
    a time, dropping those whose paired difference to the round's leader lies wholly
    on the worse side of zero by stats.Rule over every pair of the round's candidates
    and every look (2..seeds): the chance that a round drops any candidate that is in
    truth as good as another stays at 5%. `on_round` is called with each round as it ends."""
    objective = objective or Objective()
    sign = objective.sign  # sign * gain > 0: better
    current: tuple[str, ...] = ()
    remaining = list(design.factors)
    result = GreedyPath(())
    while remaining:
        here = arm_of(design, current)
        cands = {f: arm_of(design, (*current, f)) for f in remaining}
        alive = list(remaining)
        dropped: dict[str, int] = {}
        k = 2 if race else seeds
        # the leader is chosen by the data, so the family is every pair, at every look
        race_rule = stats.Rule(comparisons=max(1, len(remaining) * (len(remaining) - 1) // 2), looks=max(1, seeds - 1),
                               first=2)
        while True:
            jobs = [(here, s) for s in range(k)] + [(cands[f], s) for f in alive for s in range(k)]
            table, _ = run(jobs)
            table = table.loc[table.index < k]
            gains = {f: _gain(table.reindex(columns=[here.name, cands[f].name]), here.name, cands[f].name,
                              objective.delta_bounds) for f in remaining}
            if not race or k >= seeds or len(alive) == 1:
                break
            leader = max(alive, key=lambda f: -math.inf if math.isnan(gains[f][0]) else sign * gains[f][0])
            others = [f for f in alive if f != leader]
            vs_leader = []
            for f in others:
                # how much better f is than the leader, per seed: worse by the rule drops it
                pair = table[[cands[f].name, cands[leader].name]].dropna()
                diff = sign * (pair.iloc[:, 0] - pair.iloc[:, 1]).to_numpy()
                vs_leader.append(stats.paired(np.zeros(len(diff)), diff, None, race_rule, detect=False,
                                              scale=float(pair.abs().to_numpy().max(initial=0.0))))
            for f, worse in zip(others, race_rule.judge(vs_leader), strict=True):  # Holm over every pair
                if worse.clear and worse.delta < 0:
                    alive.remove(f)
                    dropped[f] = k
            k += 1
        round_cands = [Candidate(f, *gains[f], dropped_at=dropped.get(f)) for f in remaining]
        contenders = [c for c in round_cands if c.dropped_at is None and not math.isnan(c.gain)]
        if not contenders:
            raise DesignError(f"greedy path: every candidate after {'+'.join(current) or BASELINE} failed; "
                              f"the path cannot go on. See the failed runs.")
        chosen = max(contenders, key=lambda c: sign * c.gain).factor
        result.rounds.append(GreedyRound(current, round_cands, chosen))
        if on_round is not None:  # the sweeper logs each round as it ends
            on_round(result.rounds[-1])
        current = (*current, chosen)
        remaining.remove(chosen)
    result.path = current
    return result


# ----------------------------------------------------------------------------- the store

class StoreRunner:
    """The Runner the sweeper uses: trains through Hydra's launcher the jobs that have
    no FINISHED run yet (by config fingerprint), then reads every result back from
    MLflow. It remembers each job's fingerprint and arm for the parent's design.json."""

    def __init__(self, job_of: Callable[[Arm, int], tuple[list[str], str]], launch: Callable[[list[list[str]]], list],
                 uri: str, experiment: str, metric: str):
        """`job_of(arm, seed)` -> (the job's overrides, its fingerprint); `metric`: the
        summary metric read back (the policy's, by default the objective's column)."""
        self.job_of, self.launch = job_of, launch
        self.uri, self.experiment, self.metric = uri, experiment, metric
        self.arm_of: dict[str, str] = {}  # fingerprint -> arm
        self._jobs: dict[tuple[str, int], tuple[list[str], str]] = {}
        self.failures: list = []  # JobReturns of failed jobs, raised when the study ends

    def _job(self, arm: Arm, seed: int) -> tuple[list[str], str]:
        key = (arm.name, seed)
        if key not in self._jobs:
            self._jobs[key] = self.job_of(arm, seed)
            self.arm_of[self._jobs[key][1]] = arm.name
        return self._jobs[key]

    def _stored(self) -> pd.DataFrame:
        from mlflow.tracking import MlflowClient

        from ablate import tracking
        exp = MlflowClient(self.uri).get_experiment_by_name(self.experiment)
        if exp is None:
            return pd.DataFrame()
        df = tracking.search_runs(self.uri, [exp.experiment_id])
        col = f"tags.{tracking.FINGERPRINT}"
        return df[df[col].isin(list(self.arm_of))] if col in df else df.iloc[:0]

    def __call__(self, jobs: list[tuple[Arm, int]]) -> tuple[pd.DataFrame, set[Job]]:
        from ablate import tracking
        wanted = {self._job(arm, seed)[1]: (arm.name, seed) for arm, seed in jobs}
        stored = self._stored()
        done = set(stored.loc[stored["status"] == "FINISHED", f"tags.{tracking.FINGERPRINT}"]) if len(stored) else set()
        missing = [self._job(arm, seed)[0] for arm, seed in jobs if self._job(arm, seed)[1] not in done]
        if missing:
            for r in self.launch(missing):
                if r.status.name == "FAILED":
                    self.failures.append(r)
            stored = self._stored()
        col = f"tags.{tracking.FINGERPRINT}"
        table: dict[str, dict[int, float]] = {}
        failed: set[Job] = set()
        for fp, (arm, seed) in wanted.items():
            runs = stored[stored[col] == fp] if len(stored) else stored
            ok = runs[runs["status"] == "FINISHED"]
            if len(ok) and f"metrics.{self.metric}" in ok:
                table.setdefault(arm, {})[seed] = float(ok.sort_values("start_time")[f"metrics.{self.metric}"].iloc[-1])
            elif len(runs):
                failed.add((arm, seed))
        return pd.DataFrame(table).sort_index(), failed
