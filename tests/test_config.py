"""Config composition, presets, flattening and validation: no training here."""
import pytest
from omegaconf import OmegaConf

import ablate
from ablate.config import ConfigError, fingerprint, flatten, quote_step_args, validate

SEED_PARAMS = {1: 10_368, 2: 9_648, 3: 9_792, 4: 9_496, 5: 6_376, 6: 6_376, 7: 6_376}


@pytest.mark.parametrize("step,count", SEED_PARAMS.items())
def test_step_presets_have_the_seeds_parameter_counts(step, count):
    assert ablate.param_count(ablate.build_model(ablate.compose([f"step={step}"]))) == count


@pytest.mark.parametrize("model,norm,count", [
    ("base", "none", 10_368), ("narrow", "none", 9_648), ("narrow", "bn_before_relu", 9_792),
    ("gap", "bn_before_relu", 9_496), ("gap", "none", 9_496 - 2 * 84),
    ("deep", "bn_after_relu", 6_376), ("deep", "none", 6_376 - 2 * 82),
])
def test_every_model_option_has_its_parameter_count(model, norm, count):
    cfg = ablate.compose([f"model={model}", f"norm={norm}"])
    assert ablate.param_count(ablate.build_model(cfg)) == count


def test_presets_are_cumulative_and_batch_sizes_follow_the_seed():
    cfgs = {s: ablate.compose([f"step={s}"]) for s in range(1, 8)}
    assert [cfgs[s].train.batch_size for s in range(1, 8)] == [128] * 4 + [64] * 3
    assert all(cfgs[s].train.epochs == 15 for s in cfgs)
    assert [cfgs[s].norm.name for s in (1, 2, 3)] == ["none", "none", "bn_before_relu"]
    assert cfgs[3].model.dropout > 0 and cfgs[2].model.dropout == 0
    assert [cfgs[s].augmentation.name for s in (5, 6, 7)] == ["none", "rotate", "rotate"]
    assert [cfgs[s].scheduler.name for s in (6, 7)] == ["none", "onecycle"]
    assert cfgs[4].model.head.type == "gap" and cfgs[3].model.head.type == "conv"


def test_command_line_beats_the_step_preset():
    cfg = ablate.compose(["step=3", "norm=bn_after_relu", "train.batch_size=32"])
    assert (cfg.norm.name, cfg.train.batch_size, cfg.step) == ("bn_after_relu", 32, 3)


def test_side_experiments_are_overrides():
    assert ablate.compose(["step=6", "augmentation=rotate_erase"]).augmentation.erase.p > 0
    assert ablate.compose(["step=7", "scheduler=step"]).scheduler.name == "step"
    assert ablate.compose(["step=7", "scheduler=plateau"]).scheduler.name == "plateau"


def test_step_arguments_are_quoted_for_hydra():
    assert quote_step_args(["step=3", "seed=1"]) == ['step="3"', "seed=1"]
    assert quote_step_args(["step=1,2,3"]) == ['step="1","2","3"']
    assert quote_step_args(["step=range(1,4)"]) == ['step="1","2","3"']


def test_flattened_params_name_groups_by_their_choice():
    params = flatten(ablate.compose(["step=3", "seed=4"]))
    assert params["norm"] == "bn_before_relu" and params["seed"] == "4"
    assert params["model"] == "narrow" and params["model.dropout"] == "0.05"
    assert params["model.blocks"] == "c8p1-c16p1-M-c16-c20-M-c12|conv3"


def test_fingerprint_ignores_where_a_job_runs_but_not_what_it_computes():
    base = ablate.compose(["step=5"])
    moved = ablate.compose(["step=5", "tracking.uri=sqlite:////tmp/x.db", "data.root=/elsewhere",
                            "progress=false", "train.eval_batch_size=7"])
    assert fingerprint(base) == fingerprint(moved)
    assert fingerprint(base) != fingerprint(ablate.compose(["step=5", "train.lr=0.02"]))
    assert fingerprint(base) != fingerprint(ablate.compose(["step=5", "seed=1"]))


@pytest.mark.parametrize("override,key", [
    ("train.epochs=0", "train.epochs"), ("train.batch_size=0", "train.batch_size"),
    ("train.lr=0", "train.lr"), ("train.lr=-0.1", "train.lr"), ("model.dropout=1.0", "model.dropout"),
    ("model.dropout=-0.1", "model.dropout"), ("norm.name=layer", "norm"), ("device=tpu", "device"),
    ("data.train_subset=0", "data.train_subset"), ("tracking.on_running=maybe", "tracking.on_running"),
    ("augmentation=crop_flip augmentation.flip.p=2", "augmentation.flip.p"),
    ("augmentation=crop_flip augmentation.crop.padding=-1", "augmentation.crop.padding"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(ablate.compose(override.split()))


@pytest.mark.parametrize("override, choices", [
    ("device=tpu", "[auto, cpu, cuda]"), ("tracking.on_running=maybe", "[skip, wait]"),
    ("task.kind=ranking", "[classification, regression, sequence]"), ("objective.goal=up", "[max, min]"),
    ("objective.select=top", "[final, best]")])
def test_a_choice_key_is_typed_and_refused_when_composed_in_one_line_that_lists_its_choices(override, choices):
    key, _, value = override.partition("=")
    with pytest.raises(ConfigError) as err:
        ablate.compose([override])
    assert str(err.value) == f"{key}: Invalid value '{value}', expected one of {choices}. Fix it with `{key}=<value>`."


def test_a_choice_reads_as_its_string_everywhere():
    cfg = ablate.compose(["device=cpu", "objective.goal=max", "objective.select=best"])
    assert cfg.device == "cpu" and f"{cfg.device}" == "cpu" and str(cfg.objective.goal) == "max"
    assert flatten(cfg)["objective.select"] == "best" and flatten(cfg)["device"] == "cpu"


def test_a_norm_the_model_cannot_take_is_refused():
    cfg = ablate.compose(["norm=bn_before_relu"])
    OmegaConf.update(cfg, "model.norms", ["none"])
    with pytest.raises(ConfigError, match="takes only none"):
        validate(cfg)
