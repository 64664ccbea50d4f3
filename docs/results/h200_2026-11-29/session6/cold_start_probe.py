"""Where an empty Triton cache's first training step goes: RepLKNet-31B, 2x3x512x512, bf16 autocast, one
forward+backward on cuda:0; every precompile batch timed (plans, workers, seconds), in-process compiles counted."""
import json, os, sys, time, torch
from replk_mm.models import RepLKNet
from replk_mm.ops import triton_dwconv as t
batches, compiles = [], []
real_workers, real_compile = t.compile_in_workers, t._Launch.compile
def workers(plans, device, workers=None):
    s = time.perf_counter(); n = real_workers(plans, device, workers)
    batches.append(dict(plans=len(plans), workers=n, seconds=round(time.perf_counter() - s, 2))); return n
def compile_(self, device):
    s = time.perf_counter(); real_compile(self, device); compiles.append(time.perf_counter() - s)
t.compile_in_workers, t._Launch.compile = workers, compile_
model = RepLKNet('31B', out_indices=(0, 1, 2, 3)).cuda().train()
x = torch.randn(2, 3, 512, 512, device='cuda')
s = time.perf_counter()
with torch.autocast('cuda', dtype=torch.bfloat16):
    loss = sum(o.float().mean() for o in model(x))
fwd = time.perf_counter() - s; loss.backward(); torch.cuda.synchronize(); total = time.perf_counter() - s
s = time.perf_counter()
with torch.autocast('cuda', dtype=torch.bfloat16):
    loss = sum(o.float().mean() for o in model(x))
loss.backward(); torch.cuda.synchronize(); second = time.perf_counter() - s
slow = sorted(compiles)[-5:]
print(json.dumps(dict(first_step_s=round(total, 1), first_forward_s=round(fwd, 1), second_step_s=round(second, 3),
                      worker_batches=batches, worker_seconds=round(sum(b['seconds'] for b in batches), 1),
                      in_process_compiles=len(compiles), in_process_seconds=round(sum(compiles), 1),
                      slowest_in_process=[round(c, 2) for c in slow], cpu_count=os.cpu_count()), indent=1))
# Compile time by kernel size, in this process, into an empty cache: one forward 'rows' plan and one weight-gradient
# plan per K at a 128x128 map (bf16 input, float32 weight), as a worker compiles them.
import tempfile
os.environ['TRITON_CACHE_DIR'] = tempfile.mkdtemp(); os.environ['TRITON_ALWAYS_COMPILE'] = '1'
t.compile_in_workers, t._Launch.compile = real_workers, real_compile
t._conv_launch.cache_clear(); t._wgrad_launch.cache_clear(); t.precompile_size_classes = False
device, bf16, fp32 = torch.device('cuda', 0), torch.bfloat16, torch.float32
by_k = {}
for K in (31, 13, 5):
    for name, plan in (('conv', t._conv_launch((2, 128, 128, 128), K, (bf16, None), False, True, device)),
                       ('wgrad', t._wgrad_launch((2, 128, 128, 128), K, (bf16, bf16), True, device))):
        s = time.perf_counter(); plan.compile(device); by_k[f'{name} K={K}'] = round(time.perf_counter() - s, 2)
print('cold compile seconds by kernel:', json.dumps(by_k))
