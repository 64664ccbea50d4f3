"""Time the Triton depthwise conv against PyTorch's at RepLKNet-31B shapes (forward, forward+backward).

    python tools/benchmark_dwconv.py [--check] [--sweep] [--dtypes fp32 bf16 fp16] [--out results.json]

``--check`` compares every pass with a float64 reference on the full shapes first; ``--sweep``
also times tile variants of each kernel. The module is loaded from its file, so neither mmengine
nor the rest of replk_mm is needed.
"""
import argparse
import importlib.util
import itertools
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = [(64, 128, 56, 31), (64, 256, 28, 29), (64, 512, 14, 27), (64, 1024, 7, 13), (8, 128, 128, 31)]
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
FP32_FLOOR_TFLOPS = 66.9  # H100 SXM fp32 CUDA-core peak
CONV_VARIANTS = {  # tried by --sweep besides the default, by the kernel the default picks
    'rows': [dict(block_m=m, num_warps=w, num_stages=s) for m, w, s in
             [(128, 4, 2), (128, 8, 2), (256, 8, 1), (256, 8, 2), (256, 8, 3), (512, 8, 2)]] + [dict(block_wo=64)],
    'plane': [dict(block_n=n, num_warps=w, num_stages=s) for n, w, s in
              [(32, 4, 2), (64, 4, 1), (64, 4, 3), (64, 8, 2), (128, 4, 2), (128, 8, 2)]] + [dict(kernel='rows')],
}
WGRAD_VARIANTS = [dict(block_t=t, num_warps=w, num_stages=s, waves=v) for t, w, s, v in
                  [(64, 4, 2, 16), (128, 4, 1, 16), (128, 4, 3, 16), (256, 4, 2, 16), (128, 8, 2, 16), (128, 4, 2, 32)]]


def load_kernels():
    spec = importlib.util.spec_from_file_location('triton_dwconv', os.path.join(ROOT, 'replk_mm/ops/triton_dwconv.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench(fn):
    import triton.testing
    return triton.testing.do_bench(fn, warmup=50, rep=200, return_mode='median')


def bench_graph(fn):
    """GPU time alone: ``fn`` captured in a CUDA graph, so host-side launch costs drop out."""
    import triton.testing
    try:
        return triton.testing.do_bench_cudagraph(fn, rep=200, return_mode='median')
    except Exception as exc:  # report, don't stop the run
        print(f'graph capture failed: {str(exc).splitlines()[0][:120]}', flush=True)
        return float('nan')


def host_ms(fn, calls=50):
    """Host time to issue one call (no synchronisation inside): the floor for eager timings."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e3


def make_inputs(shape, dtype, seed=0):
    N, C, S, K = shape
    gen = torch.Generator(device='cuda').manual_seed(seed)
    x = torch.randn(N, C, S, S, device='cuda', generator=gen).to(dtype)
    w = (torch.randn(C, 1, K, K, device='cuda', generator=gen) / K).to(dtype)
    gy = torch.randn(N, C, S, S, device='cuda', generator=gen).to(dtype)
    return x, w, gy


def fwd_bwd(conv, x, w, gy):
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    return lambda: torch.autograd.grad(conv(x, w), (x, w), gy)


def torch_conv(x, w):
    return F.conv2d(x, w, padding=w.shape[-1] // 2, groups=x.shape[1])


def rel_err(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


def check(kd, shape):
    """Relative errors of forward, grad_input and grad_weight against float64 (x, w, gy drawn in fp32)."""
    x, w, gy = make_inputs(shape, torch.float32, seed=1)
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    yd = torch_conv(xd, wd)
    gxd, gwd = torch.autograd.grad(yd, (xd, wd), gy.double())
    rows, tf32_before = [], torch.backends.cudnn.allow_tf32
    for name, dtype, tf32 in [('fp32', torch.float32, True), ('fp32-tf32x3', torch.float32, False),
                              ('bf16', torch.bfloat16, True), ('fp16', torch.float16, True)]:
        torch.backends.cudnn.allow_tf32 = tf32
        xq, wq, gq = x.to(dtype).requires_grad_(), w.to(dtype).requires_grad_(), gy.to(dtype)
        torch.full_like(xq, float('nan'))  # poison the block the outputs will reuse: unwritten shows as NaN
        y = kd.depthwise_conv2d_triton(xq, wq)
        gx, gw = torch.autograd.grad(y, (xq, wq), gq)
        errs = dict(y=rel_err(y, yd), gx=rel_err(gx, gxd), gw=rel_err(gw, gwd))
        limit = 1e-4 if not tf32 else (1e-3 if dtype == torch.float32 else 1e-2)
        ok = all(math.isfinite(e) and e < limit for e in errs.values())
        rows.append(dict(shape=shape, dtype=name, ok=ok, limit=limit, **errs))
        print(f'check {shape} {name:12s} y {errs["y"]:.2e} gx {errs["gx"]:.2e} gw {errs["gw"]:.2e} '
              f'{"ok" if ok else "FAIL"} (< {limit:g})', flush=True)
    torch.backends.cudnn.allow_tf32 = tf32_before
    return rows


def sweep(kd, shape, dtype_name):
    """Times conv (forward) and wgrad tile variants on one shape; the first of each is the default."""
    N, C, S, K = shape
    x, w, gy = make_inputs(shape, DTYPES[dtype_name])
    rows = []
    size = x.element_size()
    for params in [None] + CONV_VARIANTS[kd.conv_config(N, S, S, K, size)['kernel']]:
        cfg = kd.conv_config(N, S, S, K, size, **(params or {}))
        rows.append(_time_variant('conv', shape, dtype_name, params, lambda: kd.conv(x, w, config=cfg)))
    for params in [None] + WGRAD_VARIANTS:
        cfg = kd.wgrad_config(N, C, S, S, K, size, kd.num_sms(x.device), **(params or {}))
        rows.append(_time_variant('wgrad', shape, dtype_name, params, lambda: kd.conv_wgrad(x, gy, K, config=cfg)))
    return rows


def _time_variant(kernel, shape, dtype_name, params, fn):
    try:
        ms = bench(fn)
    except Exception as exc:  # a variant may not compile (shared memory, registers); report and go on
        ms, params = float('nan'), dict(params or {}, error=str(exc).splitlines()[0][:120])
    print(f'sweep {kernel:5s} {shape} {dtype_name} {params or "default"}: {ms:.3f} ms', flush=True)
    return dict(kernel=kernel, shape=shape, dtype=dtype_name, params=params or 'default', ms=ms)


def time_shape(kd, shape, dtype_name):
    N, C, S, K = shape
    x, w, gy = make_inputs(shape, DTYPES[dtype_name])
    flops = 2 * N * C * S * S * K * K
    row = dict(shape=shape, dtype=dtype_name, fwd_gflop=flops / 1e9)
    for impl, conv in [('torch', torch_conv), ('triton', kd.depthwise_conv2d_triton)]:
        row[f'{impl}_fwd_ms'] = bench(lambda: conv(x, w))
        row[f'{impl}_fwdbwd_ms'] = bench(fwd_bwd(conv, x, w, gy))
        row[f'{impl}_fwdbwd_graph_ms'] = bench_graph(fwd_bwd(conv, x, w, gy))
        row[f'{impl}_fwdbwd_host_ms'] = host_ms(fwd_bwd(conv, x, w, gy))
    w_flipped = w.flip((-2, -1)).contiguous()
    row['triton_dgrad_ms'] = bench(lambda: kd.conv(gy, w_flipped))
    row['triton_wgrad_ms'] = bench(lambda: kd.conv_wgrad(x, gy, K))
    row['fwd_speedup'] = row['torch_fwd_ms'] / row['triton_fwd_ms']
    row['fwdbwd_speedup'] = row['torch_fwdbwd_ms'] / row['triton_fwdbwd_ms']
    row['triton_fwdbwd_tflops'] = 3 * flops / row['triton_fwdbwd_ms'] / 1e9
    row['floor_fwdbwd_ms'] = 3 * flops / FP32_FLOOR_TFLOPS / 1e9
    row['vs_floor'] = row['triton_fwdbwd_ms'] / row['floor_fwdbwd_ms']
    row['graph_speedup'] = row['torch_fwdbwd_graph_ms'] / row['triton_fwdbwd_graph_ms']
    row['graph_vs_floor'] = row['triton_fwdbwd_graph_ms'] / row['floor_fwdbwd_ms']
    return row


def print_table(rows):
    print('\n| N, C, H=W, K | dtype | torch fwd | ours fwd | x | torch fwd+bwd | ours fwd+bwd | x '
          '| ours TFLOP/s | ours / floor | graphed: torch | ours | x | ours / floor |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f'| {", ".join(map(str, r["shape"]))} | {r["dtype"]} | {r["torch_fwd_ms"]:.3f} | {r["triton_fwd_ms"]:.3f} '
              f'| {r["fwd_speedup"]:.1f} | {r["torch_fwdbwd_ms"]:.3f} | {r["triton_fwdbwd_ms"]:.3f} '
              f'| {r["fwdbwd_speedup"]:.1f} | {r["triton_fwdbwd_tflops"]:.1f} | {r["vs_floor"]:.2f} '
              f'| {r["torch_fwdbwd_graph_ms"]:.3f} | {r["triton_fwdbwd_graph_ms"]:.3f} | {r["graph_speedup"]:.1f} '
              f'| {r["graph_vs_floor"]:.2f} |')
    for dtype in sorted({r['dtype'] for r in rows}):
        sel = [r for r in rows if r['dtype'] == dtype]
        geo = lambda key: math.exp(sum(math.log(r[key]) for r in sel) / len(sel))  # noqa: E731
        print(f'{dtype}: geometric-mean speed-up fwd {geo("fwd_speedup"):.1f}x, fwd+bwd {geo("fwdbwd_speedup"):.1f}x, '
              f'graphed fwd+bwd {geo("graph_speedup"):.1f}x')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dtypes', nargs='+', default=['fp32', 'bf16'], choices=sorted(DTYPES))
    parser.add_argument('--check', action='store_true', help='compare with float64 on the full shapes first')
    parser.add_argument('--sweep', action='store_true', help='also time tile variants of each kernel')
    parser.add_argument('--out', help='write all numbers as JSON here')
    args = parser.parse_args()

    import triton
    kd = load_kernels()
    env = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               cuda=torch.version.cuda, command=' '.join(sys.argv))
    print(env, flush=True)
    result = dict(env=env, check=[], sweep=[], timings=[])
    if args.check:
        result['check'] = [r for shape in SHAPES for r in check(kd, shape)]
    for dtype_name, shape in itertools.product(args.dtypes, SHAPES):
        result['timings'].append(time_shape(kd, shape, dtype_name))
        print(json.dumps(result['timings'][-1]), flush=True)
    if args.sweep:
        result['sweep'] = [r for shape, d in itertools.product(SHAPES, args.dtypes) for r in sweep(kd, shape, d)]
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)
    print_table(result['timings'])
    if args.check and not all(r['ok'] for r in result['check']):
        sys.exit('correctness check failed')


if __name__ == '__main__':
    main()
