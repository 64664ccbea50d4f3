"""Where the eager forward+backward's host time goes on the GPU host: 64x1024x7x7 K=13 and 64x512x14x14 K=27,
bf16 input with a float32 weight (autocast's case), ours against PyTorch's conv; cProfile of ours."""
import cProfile, io, json, pstats, sys, time, torch
import torch.nn.functional as F
from replk_mm.ops.depthwise_conv import depthwise_conv2d
out = {}
def host_ms(fn, calls=300):
    for _ in range(20): fn()
    torch.cuda.synchronize(); s = time.perf_counter()
    for _ in range(calls): fn()
    e = time.perf_counter() - s; torch.cuda.synchronize(); return e / calls * 1e3
for shape in ((64, 1024, 7, 7, 13), (64, 512, 14, 14, 27)):
    N, C, H, W, K = shape
    x = torch.randn(N, C, H, W, device='cuda').bfloat16().requires_grad_()
    w = torch.randn(C, 1, K, K, device='cuda').div(K).requires_grad_()
    gy = torch.randn(N, C, H, W, device='cuda').bfloat16()
    ours = lambda: torch.autograd.grad(depthwise_conv2d(x, w, impl='triton'), (x, w), gy)
    theirs = lambda: torch.autograd.grad(F.conv2d(x, w.to(x.dtype), None, padding=K // 2, groups=C), (x, w), gy)
    fwd_ours = lambda: depthwise_conv2d(x.detach(), w.detach(), impl='triton')
    fwd_theirs = lambda: F.conv2d(x.detach(), w.detach().to(x.dtype), None, padding=K // 2, groups=C)
    r = {k: round(host_ms(f), 4) for k, f in (('ours_fwdbwd', ours), ('torch_fwdbwd', theirs),
                                              ('ours_fwd_nograd', fwd_ours), ('torch_fwd_nograd', fwd_theirs))}
    empty = lambda: torch.empty_like(x)
    r['empty_like'] = round(host_ms(empty), 4)
    r['to_bf16'] = round(host_ms(lambda: w.detach().to(torch.bfloat16)), 4)
    r['zeros_small'] = round(host_ms(lambda: torch.zeros((C, 1, K, K), device='cuda')), 4)
    out[str(shape)] = r; print(shape, r, flush=True)
    pr = cProfile.Profile(); pr.enable()
    for _ in range(500): ours()
    pr.disable(); torch.cuda.synchronize()
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats('tottime').print_stats(22); print(s.getvalue()[:6000])
json.dump(out, open(sys.argv[1], 'w'), indent=1)
