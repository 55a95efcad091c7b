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


# ---------------------------------------------------------------- common random numbers (issue 30)

def batch_labels(overrides, monkeypatch) -> list[list[int]]:
    """The labels of every training batch, in the order the run drew them."""
    from ablate.data.device import Tensors
    seen, real = [], Tensors.batches

    def batches(self, batch_size, shuffle, generator=None):
        for x, y in real(self, batch_size, shuffle, generator):
            if shuffle:
                seen.append(y.tolist())
            yield x, y

    with monkeypatch.context() as m:
        m.setattr(Tensors, "batches", batches)
        ablate.train(ablate.compose([*overrides, "force=true"]))
    return seen


def test_common_random_numbers_give_the_arms_of_a_seed_one_batch_order(overrides, monkeypatch):
    # dropout draws from the global stream: under one stream it moves the next epoch's batch order
    arms = ([*overrides, "model.dropout=0", "seed=3"], [*overrides, "model.dropout=0.2", "seed=3"])
    common = [batch_labels(a, monkeypatch) for a in arms]
    single = [batch_labels([*a, "seeds.common=false"], monkeypatch) for a in arms]
    assert common[0] == common[1]
    assert single[0][:8] == single[1][:8] and single[0] != single[1]  # the first epoch agrees, then they part
    assert common[0] != batch_labels([*arms[0][:-1], "seed=4"], monkeypatch)  # another seed, another order


def test_common_random_numbers_give_equal_shapes_equal_initial_weights(overrides, monkeypatch):
    # base's 4th conv and narrow's 3rd are both 16 -> 16, 3x3; what comes before them differs
    def conv16(model, extra=()):
        init, _ = initial_and_history([*overrides, f"model={model}", "train.epochs=1", *extra], monkeypatch)
        [key] = [k for k, v in init.items() if tuple(v.shape) == (16, 16, 3, 3)]
        return init[key]
    assert np.array_equal(conv16("base").numpy(), conv16("narrow").numpy())
    assert not np.array_equal(conv16("base", ["seeds.common=false"]).numpy(),
                              conv16("narrow", ["seeds.common=false"]).numpy())
    assert not np.array_equal(conv16("base").numpy(), conv16("base", ["seed=1"]).numpy())


def test_common_random_numbers_are_a_setting_and_the_seed_presets_keep_their_identity():
    from ablate import config
    assert not config.is_seed("seeds.common") and config.is_setting("seeds.common")
    # hashed as absent while off: runs from before the key keep their fingerprints
    assert config.fingerprint(ablate.compose(["seeds.common=false"])) == "836c430c4215306d"
    assert config.fingerprint(ablate.compose([])) != "836c430c4215306d"
    assert ablate.compose(["step=7"]).seeds.common is False
    assert ablate.compose(["step=7", "seeds.common=true"]).seeds.common is True


def test_the_report_says_how_the_runs_drew_their_random_numbers():
    def runs(*common):
        return pd.DataFrame({"params.seed": "0", "params.seeds.init": "null",
                             **({"params.seeds.common": list(common)} if common else {})}, index=range(2))
    assert effects.random_numbers(runs("True", "True")).startswith("Random numbers: common across arms")
    assert effects.random_numbers(runs("False", "False")).startswith("Random numbers: one stream per run")
    assert effects.random_numbers(runs()).startswith("Random numbers: one stream per run")  # runs from before
    assert "mixed: 1 of 2 runs" in effects.random_numbers(runs("True", "False"))
    assert effects.random_numbers(pd.DataFrame({"params.seed": ["0"]})) is None  # a user's loop draws its own


def test_a_source_seed_equal_to_the_seed_is_the_default_under_common_random_numbers():
    """Under common random numbers `seeds.init=0` with seed 0 computes what null does: one
    fingerprint, one pair; in the seed's one-stream mode it splits the streams, so it differs."""
    from ablate import config
    fp = lambda *o: config.fingerprint(ablate.compose(list(o)))  # noqa: E731
    assert fp("seed=0", "seeds.init=0", "seeds.data=0") == fp("seed=0") != fp("seed=0", "seeds.init=1")
    assert fp("step=7", "seeds.init=0") != fp("step=7")
    runs = pd.DataFrame({"params.seed": ["0", "0", "1"], "params.seeds.init": ["0", "null", "1"],
                         "params.seeds.data": ["null", "null", "1"], "params.seeds.common": ["True", "True", None]})
    used = effects.seeds_as_used(runs)
    assert list(used["params.seeds.init"]) == ["null", "null", "1"]  # the third drew one stream: as given
    assert list(used["params.seeds.common"]) == ["True", "True", "False"]  # a run from before the key: one stream
    assert effects.pair_key(used).iloc[0] == effects.pair_key(used).iloc[1]


def test_derived_seeds_never_alias_and_seeds_out_of_torchs_range_are_one_line():
    import zlib

    from ablate import config
    from ablate.errors import ConfigError
    assert engine.derived_seed(-1, "data") != engine.derived_seed(zlib.crc32(b"-1"), "data")
    assert engine.derived_seed(0, "data") != engine.derived_seed(0, "augment") != engine.derived_seed(1, "augment")
    assert 0 <= engine.derived_seed(2**64 - 1, "init") < 2**64
    for bad in ("seed=99999999999999999999", "seeds.data=-99999999999999999999"):
        with pytest.raises(ConfigError, match=r"must be .*integer in \[-2\^63, 2\^64\)"):
            config.validate(ablate.compose([bad, "seeds.common=false"]))


def test_a_config_without_seeds_draws_one_stream():
    from omegaconf import OmegaConf
    cfg = OmegaConf.create({"seed": 3})  # `~seeds` on the command line
    assert not engine.coupled(cfg) and engine.source_seeds(cfg) is None and engine.streams(cfg, "cpu") == {}
