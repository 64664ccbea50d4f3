"""Which part of a DDP run breaks the backbone's CUDA-graph capture (world size 1, one GPU).
argv: variant in {plain, pg, ddp, ddp_nodrop}; capture mode in {global, thread_local, relaxed}."""
import os
import sys
import traceback

import torch
import torch.distributed as dist

variant, mode = sys.argv[1], sys.argv[2]
if mode != 'global':
    orig = torch.cuda.graph.__init__
    def init(self, cuda_graph, pool=None, stream=None, capture_error_mode='global', **kw):
        orig(self, cuda_graph, pool, stream, capture_error_mode=mode, **kw)
    torch.cuda.graph.__init__ = init
from replk_mm.models import RepLKNet  # noqa: E402  (after the patch above, as run)

os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
os.environ.setdefault('MASTER_PORT', '29561')
if variant != 'plain':
    dist.init_process_group('nccl', rank=0, world_size=1, device_id=torch.device('cuda', 0))
norm = dict(type='BN') if variant == 'plain' else dict(type='SyncBatchNormWithoutHostSync')
model = RepLKNet('31B', drop_path_rate=0.0 if 'nodrop' in variant else 0.5, cuda_graph=True, norm_cfg=norm)
model = model.cuda().train()
net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0]) if variant.startswith('ddp') else model
x = torch.randn(2, 3, 512, 512, device='cuda')
try:
    for step in range(3):
        with torch.autocast('cuda', dtype=torch.bfloat16):
            outs = net(x)
        sum(o.float().mean() for o in outs).backward()
    torch.cuda.synchronize()
    print(f'{variant} {mode}: PASS', flush=True)
except Exception as exc:
    print(f'{variant} {mode}: FAIL {type(exc).__name__}: {str(exc).splitlines()[0]}', flush=True)
    traceback.print_exc(limit=-6)
