"""Where a full-size training step of the backbone spends GPU time: RepLKNet-31B against mmdet's Swin-B,
2 x 3 x 800 x 1216, bf16 autocast, forward + backward, torch.profiler over 3 steps after 3 warm-up."""
import json
import os
import time

import torch
from mmdet.models.backbones import SwinTransformer
from torch.profiler import ProfilerActivity, profile

from replk_mm import RepLKNet

torch.backends.cudnn.benchmark = False
x = torch.randn(2, 3, 800, 1216, device='cuda')
models = {'replknet31b': RepLKNet('31B', drop_path_rate=0.6),
          'swin_b': SwinTransformer(embed_dims=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=7,
                                    drop_path_rate=0.3)}
out = {}
for name, model in models.items():
    model = model.cuda()
    model.train()  # mmdet's SwinTransformer.train returns None

    def step():
        with torch.autocast('cuda', torch.bfloat16):
            outs = model(x)
        sum(o.float().mean() for o in outs).backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - start) / 5 * 1e3
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    events = prof.key_averages()
    gpu_ms = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA) / 3 / 1e3
    table = events.table(sort_by='self_cuda_time_total', row_limit=40, max_name_column_width=60)
    print(f'== {name}: {ms:.1f} ms per fwd+bwd, GPU kernels {gpu_ms:.1f} ms per step', flush=True)
    print(table, flush=True)
    by_shape = [dict(name=e.key, shapes=str(e.input_shapes)[:120], calls=e.count // 3, cuda_ms=e.device_time_total / 3 / 1e3)
                for e in prof.key_averages(group_by_input_shape=True)
                if 'DepthwiseConv2d' in e.key or e.key in ('aten::native_batch_norm', 'aten::bmm')]
    for row in sorted(by_shape, key=lambda r: -r['cuda_ms'])[:40]:
        print(f"{row['cuda_ms']:8.3f} ms/step {row['calls']:4d} calls  {row['name'][:30]:30s} {row['shapes']}")
    out[name] = dict(step_ms=ms, gpu_ms=gpu_ms, table=table, by_shape=by_shape)
    model.cpu()
with open(os.path.join(os.environ['OUT'], 'profile_backbone.json'), 'w') as f:
    json.dump(out, f, indent=1)
