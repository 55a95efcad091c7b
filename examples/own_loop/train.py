"""The plain script (train_plain.py) as an ablate study: @ablate.main instead of
@hydra.main, a `run` handle to log each epoch, checkpoint and resume, and a dict of
final metrics returned. `diff train_plain.py train.py` shows every line that changed."""
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import ablate


def data(split_seed: int = 0):
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    order = torch.tensor(np.random.default_rng(split_seed).permutation(len(y)))
    test, train = order[:360], order[360:]
    return x[train], y[train], x[test], y[test]


def model(cfg) -> nn.Module:
    layers, width = [], 64
    for _ in range(cfg.depth):
        layers += [nn.Linear(width, cfg.hidden), nn.ReLU()]
        if cfg.dropout:
            layers.append(nn.Dropout(cfg.dropout))
        width = cfg.hidden
    return nn.Sequential(*layers, nn.Linear(width, 10))


@torch.no_grad()
def evaluate(net, x, y) -> tuple[float, float]:
    net.eval()
    out = net(x)
    return nn.functional.cross_entropy(out, y).item(), 100.0 * (out.argmax(1) == y).float().mean().item()


@ablate.main(config_path="conf", config_name="config")
def train(cfg, run) -> dict:
    torch.manual_seed(cfg.seed)
    x, y, x_test, y_test = data()
    net = model(cfg)
    run.count_parameters(net)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs) if cfg.cosine else None
    if run.resume is not None:  # interrupted: carry on from the last checkpoint
        net.load_state_dict(run.resume["net"])
        opt.load_state_dict(run.resume["opt"])
        if sched:
            sched.load_state_dict(run.resume["sched"])
        torch.set_rng_state(run.resume["rng"])
    for epoch in range(run.epoch + 1, cfg.epochs + 1):
        net.train()
        for idx in torch.randperm(len(y)).split(cfg.batch_size):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if sched:
            sched.step()
        test_loss, test_acc = evaluate(net, x_test, y_test)
        print(f"epoch {epoch}: test loss {test_loss:.4f}, test acc {test_acc:.2f}%")
        run.log(epoch, {"test_loss": test_loss, "test_acc": test_acc})
        run.save({"net": net.state_dict(), "opt": opt.state_dict(), "rng": torch.get_rng_state(),
                  "sched": sched.state_dict() if sched else None})
    return {"test_acc": test_acc, "test_loss": test_loss}


if __name__ == "__main__":
    train()
