"""Optimizer and scheduler as `_target_` nodes: any torch.optim class works, ablate's own
options keep their identity, and a bad class, key or value is one line before any run."""
import mlflow
import pytest
import torch

import ablate
from ablate import optim
from ablate.config import fingerprint


def built(overrides: list[str], steps: int = 10):
    cfg = ablate.compose(overrides)
    model = torch.nn.Linear(3, 2)
    return optim.build(cfg, model.parameters(), steps)


def test_any_torch_optimizer_and_scheduler_is_built_with_the_engines_arguments():
    opt, sched, per_step = built(["optimizer=adam", "optimizer._target_=torch.optim.AdamW", "+optimizer.amsgrad=true",
                                  "train.lr=0.003", "scheduler=none",
                                  "+scheduler._target_=torch.optim.lr_scheduler.CosineAnnealingLR",
                                  "+scheduler._partial_=true", "+scheduler.T_max=${train.epochs}"])
    assert type(opt) is torch.optim.AdamW and type(sched) is torch.optim.lr_scheduler.CosineAnnealingLR
    group = opt.param_groups[0]
    assert (group["lr"], group["amsgrad"], group["betas"], group["fused"]) == (0.003, True, (0.9, 0.999), True)
    assert sched.T_max == 15 and not per_step
    # CyclicLR is built to step every batch; `interval` says otherwise when asked
    cyclic = ["scheduler=none", "+scheduler._target_=torch.optim.lr_scheduler.CyclicLR", "+scheduler._partial_=true",
              "+scheduler.base_lr=0.001", "+scheduler.max_lr=0.1"]
    assert built(cyclic)[2] and not built([*cyclic, "+scheduler.interval=epoch"])[2]


def test_ablates_own_options_build_what_they_always_built():
    opt, sched, per_step = built(["step=7"], steps=469)
    assert type(opt) is torch.optim.SGD and opt.defaults["momentum"] == 0.9 and opt.defaults["fused"]
    assert type(sched) is torch.optim.lr_scheduler.OneCycleLR and per_step
    assert sched.total_steps == 15 * 469 and sched.optimizer.param_groups[0]["max_lr"] == pytest.approx(0.1)
    assert type(built(["scheduler=plateau"])[1]) is torch.optim.lr_scheduler.ReduceLROnPlateau
    assert built(["scheduler=none"])[1] is None


def test_the_options_that_were_chosen_by_name_keep_their_fingerprints():
    """Measured before they became `_target_` nodes (commit d66d22b): stores keep their runs.
    Those runs drew one stream (seeds.common=false: common random numbers came later)."""
    assert fingerprint(ablate.compose(["step=7"])) == "7685173540876e3e"
    assert fingerprint(ablate.compose(["optimizer=adam", "seeds.common=false"])) == "db05bba2e2ce30d0"
    assert fingerprint(ablate.compose(["scheduler=plateau", "seeds.common=false"])) == "78930104d242122d"
    other = ablate.compose(["step=7", "optimizer._target_=torch.optim.ASGD"])
    assert fingerprint(other) != fingerprint(ablate.compose(["step=7"]))


@pytest.mark.parametrize("overrides, says", [
    (["optimizer._target_=os.system"], "optimizer._target_=os.system: system is not a torch.optim.Optimizer"),
    (["optimizer._target_=torch.optim.NoSuch"], "optimizer._target_='torch.optim.NoSuch' does not name a class"),
    (["+optimizer.lr=0.1"], "optimizer.lr=0.1: the learning rate is train.lr"),
    (["+optimizer.nesterov_typo=true"], "optimizer.nesterov_typo: no such key in optimizer=sgd, a torch.optim.SGD"),
    (["optimizer.momentum=-1"], "optimizer: cannot build torch.optim.SGD: Invalid momentum value: -1"),
    (["scheduler=step", "scheduler._target_=torch.optim.SGD"], "SGD is not a torch.optim.lr_scheduler.LRScheduler"),
    (["scheduler=step", "+scheduler.interval=batch"], "scheduler.interval='batch' is invalid: must be epoch or step"),
    (["scheduler=step", "+scheduler.T_max=3"], "scheduler.T_max: no such key in scheduler=step"),
])
def test_a_bad_optimizer_or_scheduler_is_one_line_before_any_run(overrides, tiny_data, store, says):
    cfg = ablate.compose([f"data.root={tiny_data}", f"tracking.uri={store}", "data.download=false", *overrides])
    with pytest.raises(ablate.ConfigError) as err:
        ablate.train(cfg)
    assert says in str(err.value) and "\n" not in str(err.value)
    client = mlflow.MlflowClient(store)
    assert all(not client.search_runs([e.experiment_id]) for e in client.search_experiments())


def test_a_job_trains_with_adamw_and_a_cosine_schedule(tiny_data, store):
    result = ablate.train(ablate.compose([
        f"data.root={tiny_data}", f"tracking.uri={store}", "data.download=false", "progress=false",
        "train.epochs=2", "train.batch_size=64", "optimizer=adam", "optimizer._target_=torch.optim.AdamW",
        "train.lr=0.002", "+scheduler._target_=torch.optim.lr_scheduler.CosineAnnealingLR",
        "+scheduler._partial_=true", "+scheduler.T_max=2", "+scheduler.eta_min=0.001"]))
    lrs = [m.value for m in mlflow.MlflowClient(store).get_metric_history(result.run_id, "lr")]
    assert lrs == pytest.approx([0.002, 0.0015])  # cosine from lr to eta_min over T_max epochs, logged per epoch
    params = mlflow.MlflowClient(store).get_run(result.run_id).data.params
    assert params["optimizer._target_"] == "torch.optim.AdamW" and params["scheduler"] == "none"
