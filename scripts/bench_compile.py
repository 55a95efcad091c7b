#!/usr/bin/env python
"""torch.compile against eager on this CPU: one step-7 train step (batch 64,
channels_last, 1 thread), compile time, then ms/batch measured alternately
(eager, compiled) three times in one process so load hits both alike.

    python scripts/bench_compile.py
"""
import time

import torch
import torch.nn.functional as F

import ablate

torch.set_num_threads(1)
cfg = ablate.compose(["step=7"])
torch.manual_seed(0)
model = ablate.build_model(cfg).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))


def step(net):
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


start = time.perf_counter()
compiled = torch.compile(model)
step(compiled)
step(compiled)
print("compile s", time.perf_counter() - start, flush=True)
for rnd in range(3):
    for name, net in (("eager", model), ("compiled", compiled)):
        start = time.perf_counter()
        for _ in range(50):
            step(net)
        print(rnd, name, f"{(time.perf_counter() - start) / 50 * 1000:.1f} ms/batch", flush=True)
