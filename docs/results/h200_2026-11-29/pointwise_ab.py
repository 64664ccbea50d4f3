"""A/B on the GPU (third session, 2026-11-29): RepLKNet-31B backbone fwd+bwd (bf16 autocast, batch 2) at
sizes new to the process, the 1x1 convs through cuDNN (nn.Conv2d.forward) against batched matrix
products (PointwiseConv2d.forward). Run as ``OUT=dir python3 pointwise_ab.py`` from the repository root."""
import json
import os
import random
import statistics
import time

import torch
import torch.nn as nn

from replk_mm.models.backbones.replknet import PointwiseConv2d, RepLKNet

bmm_forward = PointwiseConv2d.forward
torch.backends.cudnn.benchmark = False
rng = random.Random(0)
sizes = set()
while len(sizes) < 40:  # the multi-scale pipeline's sizes, padded to 32
    short = rng.choice(range(480, 801, 32))
    long = min(int(short * rng.uniform(1.2, 1.8)), 1333)
    h, w = (short, long) if rng.random() < 0.7 else (long, short)
    sizes.add((-(-h // 32) * 32, -(-w // 32) * 32))
sizes = sorted(sizes, key=lambda s: rng.random())
model = RepLKNet('31B', drop_path_rate=0.0).cuda().train()


def step(h, w, grad=True):
    x = torch.randn(2, 3, h, w, device='cuda')
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast('cuda', torch.bfloat16), torch.set_grad_enabled(grad):
        outs = model(x)
        if grad:
            sum(o.float().mean() for o in outs).backward()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


start = time.perf_counter()
step(*sizes[0])
step(*sizes[0], grad=False)
print(f'process first fwd+bwd (Triton compiles) {time.perf_counter() - start:.1f} s', flush=True)
res = {'cudnn': torch.backends.cudnn.version(), 'torch': torch.__version__, 'device': torch.cuda.get_device_name()}
for name, forward, chunk in (('cudnn', nn.Conv2d.forward, sizes[1:13]), ('bmm', bmm_forward, sizes[13:25]),
                             ('cudnn_again', nn.Conv2d.forward, sizes[25:33])):
    PointwiseConv2d.forward = forward
    rows = []
    for h, w in chunk:
        first = step(h, w)
        steady = min(step(h, w) for _ in range(2))
        infer_first = step(h, w, False)
        infer = min(step(h, w, False) for _ in range(2))
        rows.append(dict(size=[h, w], train_first_ms=first, train_ms=steady, infer_first_ms=infer_first,
                         infer_ms=infer))
    res[name] = dict(rows=rows, median_train_first_ms=statistics.median(r['train_first_ms'] for r in rows),
                     median_train_ms=statistics.median(r['train_ms'] for r in rows),
                     median_extra_first_ms=statistics.median(r['train_first_ms'] - r['train_ms'] for r in rows),
                     median_infer_extra_first_ms=statistics.median(r['infer_first_ms'] - r['infer_ms'] for r in rows))
    print(name, {k: round(v, 1) for k, v in res[name].items() if k != 'rows'}, flush=True)
for name, forward in (('cudnn', nn.Conv2d.forward), ('bmm', bmm_forward)):  # steady state, same sizes
    PointwiseConv2d.forward = forward
    for size in ((800, 1216), (800, 1344)):
        step(*size)
        step(*size, grad=False)
        res.setdefault('same_size', {})[f'{name} {size}'] = dict(
            train_ms=statistics.median(step(*size) for _ in range(7)),
            infer_ms=statistics.median(step(*size, grad=False) for _ in range(7)))
print(json.dumps(res['same_size'], indent=0), flush=True)
with open(os.path.join(os.environ['OUT'], 'pointwise_ab.json'), 'w') as f:
    json.dump(res, f, indent=1)
