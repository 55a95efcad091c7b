#!/usr/bin/env python
"""Side-by-side speed benchmark: ablate's engine against a seed-style loop.

The seed-style loop is what the reference study ran: torchvision MNIST with
per-sample PIL transforms (RandomRotation, ToTensor, Normalize) through a
DataLoader, feeding the same model, batch size, optimizer and scheduler. Every
configuration runs in its own subprocess (fresh caches, its own peak RSS), and
speed is reported as a ratio to the baseline measured in the same run.

    python scripts/bench.py               # quick: 200 batches per configuration
    python scripts/bench.py --repeats 3   # three interleaved rounds, medians
    python scripts/bench.py --full        # one full epoch per configuration
    python scripts/bench.py --sweep       # runs/hour: parallel launcher vs one job at a time
    python scripts/bench.py --profile "ablate engine (channels_last)"   # per-op time
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
# name -> how it trains. "seed" configs use the DataLoader; the others use ablate's engine.
# The seed-style loop is the seed's code: torchvision + PIL transforms + DataLoader,
# torch's own nn.Dropout. The engine rows use ablate's (cheaper-mask) Dropout and its
# fused conv->BN->ReLU->dropout blocks unless "torch dropout" or "unfused" says
# otherwise, so each trick's share shows on its own row (torch's dropout runs unfused
# too: the fused block needs ablate's). "channels_last" is the default layout.
CONFIGS = {
    "seed-style DataLoader (workers=0)": {"kind": "seed", "workers": 0, "torch_dropout": True},
    "seed-style DataLoader (workers=2)": {"kind": "seed", "workers": 2, "torch_dropout": True},
    "ablate engine (contiguous; torch dropout)": {"kind": "engine", "channels_last": False, "torch_dropout": True},
    "ablate engine (contiguous; unfused)": {"kind": "engine", "channels_last": False, "unfused": True},
    "ablate engine (contiguous)": {"kind": "engine", "channels_last": False},
    "ablate engine (channels_last)": {"kind": "engine", "channels_last": True},
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_one(name: str, step: int, batches: int | None, device: str, threads: int | None,
            profile: bool = False) -> dict:
    import torch
    import torch.nn.functional as F

    import ablate
    from ablate import data as data_mod
    from ablate import engine, optim

    spec = CONFIGS[name]
    if threads:
        torch.set_num_threads(threads)
    cfg = ablate.compose([f"step={step}", f"device={device}", "progress=false"])
    dev = engine.resolve_device(device)
    engine.seed_everything(0)
    model = ablate.build_model(cfg).to(dev)
    if spec.get("torch_dropout"):
        from ablate.kernels import Dropout
        for m in model.modules():
            if isinstance(m, Dropout):
                m.__class__ = torch.nn.Dropout  # same p, torch's bernoulli_ mask
    if spec.get("unfused"):
        from ablate.kernels import ConvBlock
        for m in model.modules():
            if isinstance(m, ConvBlock):
                m.__class__ = torch.nn.Sequential  # each layer on its own, as built
    n_train = 60_000 if batches is None else batches * cfg.train.batch_size
    steps = -(-n_train // cfg.train.batch_size)
    opt, sched, per_batch = optim.build(cfg, model.parameters(), steps)

    if spec["kind"] == "seed":
        from torch.utils.data import DataLoader, Subset
        from torchvision import datasets, transforms
        tf = [transforms.ToTensor(), transforms.Normalize((cfg.data.mean,), (cfg.data.std,))]
        if cfg.augmentation.rotate is not None:
            r = cfg.augmentation.rotate
            tf.insert(0, transforms.RandomRotation((-r.degrees, r.degrees), fill=(r.fill,)))
        ds = datasets.MNIST(cfg.data.root, train=True, transform=transforms.Compose(tf))
        ds = Subset(ds, range(n_train))
        loader = DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True,
                            num_workers=spec["workers"], pin_memory=dev.type == "cuda")
        model.train()
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if per_batch:
                sched.step()
            loss.item()  # the seed printed the loss every batch
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    else:
        from omegaconf import OmegaConf
        OmegaConf.update(cfg, "data.train_subset", None if batches is None else n_train)
        tensors = data_mod.load(data_mod.checked(cfg), dev)
        if spec["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        state = engine.State(model, opt, sched, per_batch)
        from ablate import task as task_mod
        from ablate.augment import Augment
        the_task = task_mod.build(cfg).to(dev)
        aug = Augment(cfg.augmentation, tensors.mean, tensors.std)
        start = time.perf_counter()
        with torch.profiler.profile() if profile else contextlib.nullcontext() as prof:
            engine.train_epoch(state, tensors, aug, the_task, cfg.train.batch_size, None)
        if profile:  # where a training step's time goes, per op, on stderr
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    out = {"config": name, "step": step, "device": str(dev), "threads": torch.get_num_threads(),
           "batches": steps, "batch_size": cfg.train.batch_size,
           "ms_per_batch": 1000 * seconds / steps, "it_per_s": steps / seconds,
           "epoch_seconds": seconds * (-(-60_000 // cfg.train.batch_size)) / steps,
           "peak_rss_mb": _peak_mb()}
    if dev.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def sweep_throughput(args) -> pd.DataFrame:
    """The same small study twice, each in a fresh store: one job at a time (all
    cores per job) and with the parallel launcher (cores split between jobs)."""
    import tempfile

    import mlflow
    study = ["step=5,6,7", "seed=0,1", f"train.epochs={args.sweep_epochs}",
             f"data.train_subset={args.sweep_subset}", "progress=false", "report.auto=false"]
    rows = []
    for name, launcher in (("one job at a time", []), ("parallel launcher", ["hydra/launcher=parallel"])):
        with tempfile.TemporaryDirectory() as tmp:
            print(f"running: sweep, {name} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "ablate", "-m", *launcher, *study], cwd=tmp,
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
            df = mlflow.search_runs(experiment_names=["ablate"])
            df = df[df["params.seed"].notna()]
            rows.append({"config": f"sweep, {name}", "jobs": len(df), "wall_seconds": seconds,
                         "runs_per_hour": 3600 * len(df) / seconds,
                         "mean_best_test_acc": df["metrics.best_test_acc"].mean()})
    out = pd.DataFrame(rows)
    out["speedup_vs_sequential"] = out["runs_per_hour"] / out["runs_per_hour"].iloc[0]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="a full epoch per configuration")
    ap.add_argument("--batches", type=int, default=200, help="quick mode: batches per configuration")
    ap.add_argument("--step", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names")
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds over all configurations, interleaved; the table shows each one's median")
    ap.add_argument("--csv", type=Path, default=REPO / "reports" / "bench.csv")
    ap.add_argument("--sweep", action="store_true", help="measure sweep throughput instead")
    ap.add_argument("--sweep-epochs", type=int, default=1)
    ap.add_argument("--sweep-subset", type=int, default=12800)
    ap.add_argument("--profile", metavar="CONFIG", help="print torch.profiler's table for one engine configuration")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = None if args.full else args.batches
    if args.profile:
        run_one(args.profile, args.step, batches, args.device, args.threads, profile=True)
        return 0
    if args.one:  # child process: one configuration, JSON on stdout
        print(json.dumps(run_one(args.one, args.step, batches, args.device, args.threads)))
        return 0
    pd.set_option("display.width", 200)
    if args.sweep:
        df = sweep_throughput(args)
        csv = args.csv.with_name(args.csv.stem + "-sweep.csv")
        csv.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(csv, index=False)
        print(df.round(3).to_string(index=False))
        print(f"\nwrote {csv}")
        return 0
    rows = []
    # Rounds interleave the configurations, so a slow spell on a shared machine
    # hits all of them rather than one; the median per configuration is reported.
    for r in range(args.repeats):
        for name in args.configs.split(","):
            cmd = [sys.executable, __file__, "--one", name, "--step", str(args.step), "--device", args.device,
                   "--batches", str(args.batches)] + (["--full"] if args.full else []) \
                + (["--threads", str(args.threads)] if args.threads else [])
            print(f"running: {name} (round {r + 1}/{args.repeats}) ...", file=sys.stderr, flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            rows.append({"round": r + 1, **json.loads(done.stdout.strip().splitlines()[-1])})
    runs = pd.DataFrame(rows)
    # Each round's ratio uses that round's best seed-style time: paired, so a slow
    # spell that spans a round cancels out.
    seed_style = runs[runs["config"].str.startswith("seed-style")].groupby("round")["ms_per_batch"].min()
    runs["speedup"] = runs["round"].map(seed_style) / runs["ms_per_batch"] if len(seed_style) else float("nan")
    by = runs.groupby("config", sort=False)
    df = by.median(numeric_only=True).reset_index().drop(columns=["round", "speedup"])
    df["ms_per_batch_min"] = by["ms_per_batch"].min().to_numpy()
    df["ms_per_batch_max"] = by["ms_per_batch"].max().to_numpy()
    df["rounds"] = args.repeats
    df.insert(1, "device", by["device"].first().to_numpy())
    for col in ("step", "threads", "batches", "batch_size"):
        df[col] = df[col].astype(int)
    baseline = df[df["config"].str.startswith("seed-style")]["ms_per_batch"].min()
    df["speedup_vs_best_seed_style"] = baseline / df["ms_per_batch"]  # ratio of medians
    df["speedup_per_round_median"] = by["speedup"].median().to_numpy()
    df["speedup_per_round_min"] = by["speedup"].min().to_numpy()
    df["speedup_per_round_max"] = by["speedup"].max().to_numpy()
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.csv, index=False)
    rounds_csv = args.csv.with_name(args.csv.stem + "-rounds.csv")
    runs.to_csv(rounds_csv, index=False)
    print(df.round(2).to_string(index=False))
    print(f"\nwrote {args.csv} and {rounds_csv} (every round)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
