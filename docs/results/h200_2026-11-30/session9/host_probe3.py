"""The eager fwd+bwd's host time taken apart at 64x1024x7x7 K=13 (fp32 and bf16 input, float32 weight): the whole,
its forward alone, its backward alone, the launches without autograd; then torch.profiler's host rows of 20 calls."""
import json, statistics, sys, time, torch
from torch.profiler import profile, ProfilerActivity
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
for dtype in (torch.float32, torch.bfloat16):
    N, C, H, W, K = 64, 1024, 7, 7, 13
    x = torch.randn(N, C, H, W, device='cuda').to(dtype).requires_grad_()
    w = torch.randn(C, 1, K, K, device='cuda').div(K).requires_grad_()
    gy = torch.randn(N, C, H, W, device='cuda').to(dtype)
    xd, wd, wc = x.detach(), w.detach(), w.detach().to(dtype).contiguous()
    gx0, gw0 = torch.empty_like(xd), torch.empty_like(wd)
    class FwdOnly(torch.autograd.Function):  # our forward, a backward with no work
        @staticmethod
        def forward(ctx, x, w): return dc._EagerDepthwiseConv2d.forward(ctx, x, w, None)
        @staticmethod
        def backward(ctx, g): return gx0, gw0
    class BwdOnly(torch.autograd.Function):  # a forward with no work, our backward
        @staticmethod
        def forward(ctx, x, w):
            dc._save_for_backward(ctx, x, w.to(x.dtype), w.dtype, None); return torch.empty_like(x)
        @staticmethod
        def backward(ctx, g): return dc._EagerDepthwiseConv2d.backward(ctx, g)[:2]
    def via_backward():
        x.grad = w.grad = None
        dc.depthwise_conv2d(x, w, impl='triton').backward(gy)
    def launches():
        kt.launch_conv(xd, wd); kt.launch_conv(gy, wc, flip=True); kt.launch_weight_grad(xd, gy, K)
    r = dict(whole=host_ms(lambda: torch.autograd.grad(dc.depthwise_conv2d(x, w, impl='triton'), (x, w), gy)),
             whole_via_backward=host_ms(via_backward),
             forward_with_grad_no_backward=host_ms(lambda: dc.depthwise_conv2d(x, w, impl='triton')),
             our_forward_empty_backward=host_ms(lambda: torch.autograd.grad(FwdOnly.apply(x, w), (x, w), gy)),
             empty_forward_our_backward=host_ms(lambda: torch.autograd.grad(BwdOnly.apply(x, w), (x, w), gy)),
             launches_no_autograd=host_ms(launches),
             torch_whole=host_ms(lambda: torch.autograd.grad(torch.nn.functional.conv2d(x, w.to(dtype), None, padding=K // 2, groups=C), (x, w), gy)))
    out[str(dtype)] = r; print(dtype, r, flush=True)
    fn = lambda: torch.autograd.grad(dc.depthwise_conv2d(x, w, impl='triton'), (x, w), gy)
    for _ in range(10): fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(20): fn()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=22, max_name_column_width=48), flush=True)
json.dump(out, open(sys.argv[1], 'w'), indent=1)
