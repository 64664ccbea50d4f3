"""Where our eager forward+backward's host time goes (fp32 and bf16 input, float32 weight): cProfile of ours at
64x1024x7x7 K=13 and 64x256x28x28 K=29, and the parts timed alone (host ms per call, median of 10 batches of 20)."""
import cProfile, gc, io, json, pstats, statistics, sys, time, torch
import torch.nn.functional as F
from replk_mm.ops import depthwise_conv as dc
from replk_mm.ops import triton_dwconv as kt
out = {}
def host_ms(fn, calls=20, batches=10, warmup=10):
    for _ in range(warmup): fn()
    t = []
    for _ in range(batches):
        torch.cuda.synchronize(); s = time.perf_counter()
        for _ in range(calls): fn()
        t.append((time.perf_counter() - s) / calls)
    torch.cuda.synchronize(); return round(statistics.median(t) * 1e3, 4)
class Noop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w): return torch.empty_like(x)
    @staticmethod
    def backward(ctx, g): return g, None
for dtype in (torch.float32, torch.bfloat16):
  for shape in ((64, 1024, 7, 7, 13), (64, 256, 28, 28, 29)):
    N, C, H, W, K = shape
    x = torch.randn(N, C, H, W, device='cuda').to(dtype).requires_grad_()
    w = torch.randn(C, 1, K, K, device='cuda').div(K).requires_grad_()
    gy = torch.randn(N, C, H, W, device='cuda').to(dtype)
    xd, wd, wc = x.detach(), w.detach(), w.detach().to(dtype).contiguous()
    ours = lambda: torch.autograd.grad(dc.depthwise_conv2d(x, w, impl='triton'), (x, w), gy)
    theirs = lambda: torch.autograd.grad(F.conv2d(x, w.to(x.dtype), None, padding=K // 2, groups=C), (x, w), gy)
    r = dict(ours_fwdbwd=host_ms(ours), torch_fwdbwd=host_ms(theirs))
    gc.disable(); r['ours_fwdbwd_gc_off'] = host_ms(ours); r['torch_fwdbwd_gc_off'] = host_ms(theirs); gc.enable()
    r['ours_fwd_nograd'] = host_ms(lambda: dc.depthwise_conv2d(xd, wd, impl='triton'))
    r['launch_conv'] = host_ms(lambda: kt.launch_conv(xd, wc))
    r['launch_conv_flip'] = host_ms(lambda: kt.launch_conv(gy, wc, flip=True))
    r['launch_weight_grad'] = host_ms(lambda: kt.launch_weight_grad(xd, gy, K))
    r['zeros_small'] = host_ms(lambda: torch.zeros((C, 1, K, K), device='cuda'))
    r['empty_like'] = host_ms(lambda: torch.empty_like(xd))
    r['noop_function_fwdbwd'] = host_ms(lambda: torch.autograd.grad(Noop.apply(x, w), (x,), gy))
    r['supports'] = host_ms(lambda: kt.supports(xd, K, wd.device), calls=200)
    out[f'{dtype} {shape}'] = r; print(dtype, shape, r, flush=True)
    pr = cProfile.Profile(); pr.enable()
    for _ in range(400): ours()
    pr.disable(); torch.cuda.synchronize()
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats('tottime').print_stats(25); print(s.getvalue()[:7000], flush=True)
json.dump(out, open(sys.argv[1], 'w'), indent=1)
