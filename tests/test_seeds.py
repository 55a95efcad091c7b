"""Seeds per source of variance: each source its own stream when any is set, resume
restores them, and the report pairs runs by all their seeds and splits the spread."""
import itertools

import numpy as np
import pandas as pd
import pytest

import ablate
from ablate import effects, engine
from conftest import preempt_after


def initial_and_history(overrides, monkeypatch):
    """The model's weights as training starts, and the run's history."""
    seen = {}
    real_fit = engine.fit

    def fit(cfg, data, state, *args, **kwargs):
        seen["init"] = {k: v.clone() for k, v in state.model.state_dict().items()}
        return real_fit(cfg, data, state, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(engine, "fit", fit)
        result = ablate.train(ablate.compose([*overrides, "force=true"]))
    return seen["init"], [h["train_loss"] for h in result.history]


def same(a, b):
    return all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_each_source_has_its_own_stream(overrides, monkeypatch):
    base = [*overrides, "step=7", "train.epochs=1"]
    init0, loss0 = initial_and_history([*base, "seeds.data=0"], monkeypatch)
    init_data, loss_data = initial_and_history([*base, "seeds.data=1"], monkeypatch)
    init_init, _ = initial_and_history([*base, "seeds.data=0", "seeds.init=1"], monkeypatch)
    _, loss_aug = initial_and_history([*base, "seeds.data=0", "seeds.augment=1"], monkeypatch)
    _, loss_drop = initial_and_history([*base, "seeds.data=0", "seeds.dropout=1"], monkeypatch)
    assert same(init0, init_data) and loss_data != loss0  # another batch order, the same weights
    assert not same(init0, init_init)                    # other weights
    assert loss_aug != loss0 and loss_drop != loss0        # other rotations, other dropout masks
    # with none set, one stream as before; seeds.init equal to seed gives the same weights
    init_plain, _ = initial_and_history(base, monkeypatch)
    assert same(init_plain, init0)


def test_split_streams_resume_exactly(overrides, monkeypatch, store):
    args = [*overrides, "step=7", "train.epochs=3", "seeds.augment=5"]
    straight = ablate.train(ablate.compose([*args, "tracking.uri=" + store.replace("mlflow.db", "a.db")]))
    cfg = ablate.compose(args)
    preempt_after(1, cfg, monkeypatch)
    resumed = ablate.train(cfg)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]


def test_the_report_pairs_by_every_seed_and_splits_the_spread_by_source():
    init_effect = dict(enumerate([-0.4, -0.1, 0.2, 0.3]))  # planted: init matters 10x more than data
    data_effect = dict(enumerate([-0.03, 0.01, 0.0, 0.02]))
    rows = []
    for i, d in itertools.product(range(4), range(4)):
        rows.append({"params.seed": "0", "params.seeds.init": str(i), "params.seeds.data": str(d),
                     "params.seeds.augment": "null", "metrics.final_test_acc": 99 + init_effect[i] + data_effect[d]})
    runs = pd.DataFrame(rows)
    assert effects.pair_key(runs).nunique() == 16  # every (seed, init, data) its own pair
    v = effects.variance_by_source(runs).set_index("source")
    assert list(v.index) == ["seeds.init", "seeds.data", "all runs"]
    assert v.loc["seeds.init", "std"] == pytest.approx(np.std(list(init_effect.values()), ddof=1))
    assert v.loc["seeds.data", "std"] == pytest.approx(np.std(list(data_effect.values()), ddof=1))
    assert v.loc["seeds.init", "df"] == 4 * 3  # four data seeds, each with four init seeds
