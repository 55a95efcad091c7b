"""A plain PyTorch training script, as it was before ablate: an MLP on scikit-learn's
8x8 digits, trained with SGD; the config is a Hydra app's."""
import hydra
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn


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


@hydra.main(config_path="conf", config_name="plain", version_base="1.3")
def train(cfg) -> float:
    torch.manual_seed(cfg.seed)
    x, y, x_test, y_test = data()
    net = model(cfg)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs) if cfg.cosine else None
    for epoch in range(1, cfg.epochs + 1):
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
    return test_acc


if __name__ == "__main__":
    train()
