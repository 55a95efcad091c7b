"""CPU training kernels against torch's layers: the dropout mask and the fused
conv -> BatchNorm -> ReLU -> dropout block."""
import pytest
import torch
from torch import nn

import ablate
from ablate.kernels import Dropout, drop_positions


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cpu_dropout_is_dropout(layout):
    """The cheaper mask keeps dropout's maths: each element zeroed with probability p,
    survivors scaled by 1/(1-p), gradient through the same mask,
    identity in eval, and the same mask for the same seed."""
    d = Dropout(0.05)
    x = torch.randn(64, 16, 24, 24).to(memory_format=layout).requires_grad_()
    torch.manual_seed(1)
    y = d(x)
    dropped = (y == 0).float().mean().item()
    n = x.numel()
    assert abs(dropped - 0.05) < 4 * (0.05 * 0.95 / n) ** 0.5  # within 4 standard errors
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.95)
    y.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.95)
    torch.manual_seed(1)
    assert torch.equal(d(x), y)
    # the mask is laid out like x: no stripes along the channel axis
    per_channel = (y == 0).float().mean(dim=(0, 2, 3))
    assert per_channel.min() > 0.03 and per_channel.max() < 0.07
    d.eval()
    assert torch.equal(d(x), x)


@pytest.mark.parametrize("sigmas", [6.0, -30.0])  # -30: 16 draws a pass, so the refill loop runs
def test_drop_positions_are_bernoulli_trials(sigmas):
    """Geometric gaps give i.i.d. Bernoulli(p) drops: sorted unique indices below n, the
    right rate overall and at each position, including the first and the last."""
    torch.manual_seed(0)
    n, p, trials = 200, 0.1, 4000
    hits = torch.zeros(n)
    for _ in range(trials):
        pos = drop_positions(n, p, sigmas=sigmas)
        assert torch.all(pos[1:] > pos[:-1]) and (len(pos) == 0 or 0 <= pos[0] <= pos[-1] < n)
        hits[pos] += 1
    rate = hits / trials
    se = (p * (1 - p) / trials) ** 0.5
    assert abs(rate.mean().item() - p) < 4 * se / n ** 0.5
    assert (rate - p).abs().max().item() < 5 * se  # no position is favoured (200 positions)
    assert abs(rate[0].item() - p) < 4 * se and abs(rate[-1].item() - p) < 4 * se
    # same seed, same positions; and the refill loop continues exactly where one long
    # pass would (CPU uniforms come from one stream however they are split)
    torch.manual_seed(1)
    a = drop_positions(10_000, 0.05)
    torch.manual_seed(1)
    assert torch.equal(drop_positions(10_000, 0.05, sigmas=sigmas), a)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("size", [26, 4])  # 4: a 2x2 output, where BN's unbiased variance shows
def test_fused_block_is_the_unfused_maths(layout, size):
    """The CPU training path of conv -> BN -> ReLU -> dropout (ReLU and dropout fused,
    dropout's scale in BN's affine) gives the unfused block's outputs, gradients and BN
    statistics for the same seed, in either layout; in eval the block is the plain
    Sequential. In float64, where the two orders of the same sums agree to 1e-12 (in
    float32 a gradient summed over 36,864 positions differs in its fourth digit)."""
    torch.manual_seed(0)
    block = ablate.build_model(ablate.compose(["step=7"]))[1].double().to(memory_format=layout)
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, Dropout]
    with torch.no_grad():  # trained-looking BN state, not the 1/0 defaults
        for t in (block[1].weight, block[1].bias, block[1].running_mean):
            t.copy_(torch.randn_like(t))
        block[1].running_var.uniform_(0.5, 2.0)
    if size == 4:
        block[1].momentum = None  # BatchNorm's cumulative average
    x = torch.randn(64 if size > 4 else 2, 8, size, size, dtype=torch.float64).to(memory_format=layout)
    x.requires_grad_()
    start = {k: v.clone() for k, v in block.state_dict().items()}
    results = []
    for forward in (block.forward, lambda t: nn.Sequential.forward(block, t)):
        block.load_state_dict(start)
        block.zero_grad()
        x.grad = None
        torch.manual_seed(1)
        y = forward(x)
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y)).sum().backward()
        results.append([y, x.grad, *(p.grad for p in block.parameters()),
                        *(b.clone() for b in block[1].buffers())])
    fused, plain = results
    assert fused[0].is_contiguous(memory_format=layout)
    assert (fused[0] == 0).float().mean() > 0.3  # ReLU and dropout both zero something
    assert torch.equal(fused[0] == 0, plain[0] == 0)
    for a, b in zip(fused, plain, strict=True):  # rounding only, relative to each tensor's scale
        assert (a.double() - b.double()).abs().max() <= 1e-12 * b.double().abs().max()
    block.eval()
    assert torch.equal(block(x), nn.Sequential.forward(block, x))
