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
cfg = ablate.compose(['step=7'])
torch.manual_seed(0)
m = ablate.build_model(cfg).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(64,1,28,28); y = torch.randint(0,10,(64,))
def step(model):
    loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
t=time.perf_counter(); cm = torch.compile(m); step(cm); step(cm); print('compile s', time.perf_counter()-t, flush=True)
for rnd in range(3):
    for name, model in (('eager', m), ('compiled', cm)):
        t=time.perf_counter()
        for _ in range(50): step(model)
        print(rnd, name, f'{(time.perf_counter()-t)/50*1000:.1f} ms/batch', flush=True)
