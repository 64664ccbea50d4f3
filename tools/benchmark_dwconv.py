"""Time the depthwise conv op (Triton kernels) against PyTorch's conv at RepLKNet-31B shapes.

    python tools/benchmark_dwconv.py [--shapes N,C,H,W,K ... | detection] [--check] [--dtypes fp32 bf16 fp16]
        [--out results.json] [--deploy] [--sizes-sweep [--sweep-sizes 50]] [--compile-check] [--tile-sweep]

The default run times forward and forward+backward at the five fixed shapes, or at ``--shapes`` (eager,
CUDA-graphed, host time). ``--check`` first compares every pass with float64 on the full shapes.
``--deploy`` times the deploy form's merged conv with bias against the training form's branches with their
BN (eval forward). ``--sizes-sweep`` runs multi-scale detection inputs through every RepLKNet-31B stage
and reports each new size's first forward+backward against its steady state, and the compile count.
``--compile-check`` runs ``torch.library.opcheck`` on CUDA and ``torch.compile(fullgraph=True)`` of
RepLKNet-31B (forward and backward), and times compiled + CUDA-graph training against eager.
``--tile-sweep`` times tile variants of each kernel. Weights are float32 at every input dtype, as autocast
leaves the parameters; both convs cast them, as under autocast. Where mmengine or mmcv is missing (a bare GPU
machine), ``replk_mm.ops`` and the backbone file are loaded on their own with small stand-ins.
"""
import argparse
import importlib
import importlib.util
import itertools
import json
import math
import random
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
# (N, C, H, W, K): the five fixed shapes.
SHAPES = [(64, 128, 56, 56, 31), (64, 256, 28, 28, 29), (64, 512, 14, 14, 27), (64, 1024, 7, 7, 13),
          (8, 128, 128, 128, 31)]
# RepLKNet-31B stages: (stride, channels, large kernel); the small kernel is 5.
STAGES = [(4, 128, 31), (8, 256, 29), (16, 512, 27), (32, 1024, 13)]
SMALL_KERNEL = 5
# --shapes detection: the maps of a 2 x 3 x 800 x 1216 detection input (Cascade Mask R-CNN, 2 images per GPU).
DETECTION_IMAGE = (2, 800, 1216)
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
FP32_FLOOR_TFLOPS = 66.9  # H100/H200 SXM fp32 CUDA-core peak
CONV_VARIANTS = {  # tried by --tile-sweep besides the default, by the kernel the default picks
    'rows': [dict(block_m=m, num_warps=w, num_stages=s) for m, w, s in
             [(64, 4, 2), (128, 4, 2), (128, 8, 2), (256, 8, 1), (256, 8, 2), (256, 8, 3), (512, 8, 2)]]
            + [dict(block_wo=64), dict(block_wo=64, block_m=128), dict(block_wo=16, block_m=128)],
    'plane': [dict(block_n=n, num_warps=w, num_stages=s) for n, w, s in
              [(32, 4, 2), (64, 4, 1), (64, 4, 3), (64, 8, 2), (128, 4, 2), (128, 8, 2)]] + [dict(kernel='rows')],
}
WGRAD_VARIANTS = ([dict(block_t=t, num_warps=w, num_stages=s, waves=v) for t, w, s, v in [
    (64, 4, 2, 16), (128, 4, 1, 16), (128, 4, 3, 16), (256, 4, 2, 16), (128, 8, 2, 16), (128, 4, 2, 32)]]
    + [dict(block_t=t, per_image=True) for t in (64, 128, 256)])  # chunks inside one image


def load_ops():
    """``replk_mm.ops``; without mmengine/mmcv, from its folder under bare ``replk_mm`` / ``replk_mm.apis``
    packages (``replk_mm.numerics`` and ``replk_mm.apis.timing`` need torch only)."""
    try:
        import mmcv.cnn  # noqa: F401  (what the whole package needs)
        import mmengine  # noqa: F401
    except ImportError:
        for name, folder in (('replk_mm', ROOT / 'replk_mm'), ('replk_mm.apis', ROOT / 'replk_mm' / 'apis')):
            package = types.ModuleType(name)
            package.__path__ = [str(folder)]
            sys.modules.setdefault(name, package)
    return importlib.import_module('replk_mm.ops')


def load_backbone():
    """The RepLKNet class; without mmengine/mmcv, its file with stand-ins for the three names it takes."""
    try:
        from replk_mm import RepLKNet
        return RepLKNet
    except ImportError:
        pass

    class DropPath(nn.Module):
        def __init__(self, drop_prob=0.0):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            if not self.training or self.drop_prob == 0.0:
                return x
            keep = x.new_empty((x.shape[0], ) + (1, ) * (x.dim() - 1)).bernoulli_(1 - self.drop_prob)
            return x * keep / (1 - self.drop_prob)

    class BaseModule(nn.Module):
        def __init__(self, init_cfg=None):
            super().__init__()
            self.init_cfg = init_cfg

    stubs = {'mmcv': {}, 'mmcv.cnn': dict(build_norm_layer=lambda cfg, channels: ('bn', nn.BatchNorm2d(channels))),
             'mmcv.cnn.bricks': dict(DropPath=DropPath), 'mmengine': {}, 'mmengine.model': dict(BaseModule=BaseModule),
             'replk_mm.registry': dict(register_model=lambda cls: cls)}
    for name, attrs in stubs.items():
        module = sys.modules.setdefault(name, types.ModuleType(name))
        module.__dict__.update(attrs)
    for name in ('replk_mm.models', 'replk_mm.models.backbones'):
        package = types.ModuleType(name)
        package.__path__ = [str(ROOT / name.replace('.', '/'))]
        sys.modules.setdefault(name, package)
    return importlib.import_module('replk_mm.models.backbones.replknet').RepLKNet


def bench(fn, rep=200):
    import triton.testing
    return triton.testing.do_bench(fn, warmup=min(50, rep // 4), rep=rep, return_mode='median')


def bench_graph(fn):
    """GPU time alone: ``fn`` captured in a CUDA graph, so host-side launch costs drop out."""
    import triton.testing
    try:
        return triton.testing.do_bench_cudagraph(fn, rep=200, return_mode='median')
    except Exception as exc:  # report, don't stop the run
        print(f'graph capture failed: {str(exc).splitlines()[0][:120]}', flush=True)
        return float('nan')


def host_ms(fn, calls=20, batches=10, warmup=10):
    """Host time to issue one call (no synchronisation inside): the floor for eager timings.

    The median over ``batches`` of ``calls`` calls, each batch started on an idle GPU, so that a batch queues
    few launches (PyTorch's conv leaves 2.5-51 ms of GPU work per call at these shapes; with 300 calls in a row
    its host time read 0.83 ms at 7x7, the host waiting for a full launch queue), and a median that one slow
    batch does not move. One timing of 50 calls after one warm-up gave the same code path 0.21-0.39 ms at
    different shapes (run 8).
    """
    for _ in range(warmup):
        fn()
    per_call = []
    for _ in range(batches):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - start) / calls)
    torch.cuda.synchronize()
    return statistics.median(per_call) * 1e3


def compiled_kernels(kernels):
    """Entries in the Triton JIT caches of our kernels (what has been compiled in this process)."""
    count = 0
    for kernel in (kernels._conv_plane_kernel, kernels._conv_rows_kernel, kernels._wgrad_kernel):
        caches = getattr(kernel, 'device_caches', None)
        if caches is not None:
            count += sum(len(entry[0]) for entry in caches.values())
        else:
            count += sum(len(cache) for cache in getattr(kernel, 'cache', {}).values())
    return count


def make_inputs(shape, dtype, seed=0):
    """Input, weight and output gradient; the weight float32 whatever the input's dtype, as autocast's parameters."""
    N, C, H, W, K = shape
    gen = torch.Generator(device='cuda').manual_seed(seed)
    x = torch.randn(N, C, H, W, device='cuda', generator=gen).to(dtype)
    w = torch.randn(C, 1, K, K, device='cuda', generator=gen) / K
    gy = torch.randn(N, C, H, W, device='cuda', generator=gen).to(dtype)
    return x, w, gy


def fwd_bwd(conv, x, w, gy):
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    return lambda: torch.autograd.grad(conv(x, w), (x, w), gy)


def torch_conv(x, w, b=None):
    """PyTorch's conv as autocast runs it: the parameters cast to the input's dtype."""
    b = None if b is None else b.to(x.dtype)
    return F.conv2d(x, w.to(x.dtype), b, padding=w.shape[-1] // 2, groups=x.shape[1])


def float64_check_rows(ops, shape):
    """Relative errors of output and every gradient (with bias) against float64; x, w, b, gy drawn in fp32.

    Each precision runs twice on fresh inputs of the same shape: the second call reuses the cached
    launch plans and compiled kernels.
    """
    from replk_mm.numerics import relative_error  # after load_ops(): importable on a bare GPU machine too
    rows, tf32_before = [], torch.backends.cudnn.allow_tf32
    for name, dtype, tf32 in [('fp32', torch.float32, True), ('fp32-tf32x3', torch.float32, False),
                              ('bf16', torch.bfloat16, True), ('fp16', torch.float16, True)]:
        for seed in (1, 2):
            x, w, gy = make_inputs(shape, torch.float32, seed=seed)
            b = torch.randn(shape[1], device='cuda')
            xd, wd, bd = (t.double().requires_grad_() for t in (x, w, b))
            yd = torch_conv(xd, wd, bd)
            grads_ref = torch.autograd.grad(yd, (xd, wd, bd), gy.double())
            torch.backends.cudnn.allow_tf32 = tf32
            # The input in the precision checked; weight and bias float32, as autocast leaves the parameters.
            xq, wq, bq = x.to(dtype).requires_grad_(), w.requires_grad_(), b.requires_grad_()
            torch.full_like(xq, float('nan'))  # poison the block the outputs will reuse: unwritten shows as NaN
            y = ops.depthwise_conv2d(xq, wq, bq, impl='triton')
            grads = torch.autograd.grad(y, (xq, wq, bq), gy.to(dtype))
            torch.backends.cudnn.allow_tf32 = tf32_before
            errs = dict(y=relative_error(y, yd.detach()),
                        **{k: relative_error(g, r) for k, g, r in zip(('gx', 'gw', 'gb'), grads, grads_ref)})
            limit = 1e-4 if not tf32 else (1e-3 if dtype == torch.float32 else 1e-2)
            ok = all(math.isfinite(e) and e < limit for e in errs.values())
            rows.append(dict(shape=shape, dtype=name, seed=seed, ok=ok, limit=limit, **errs))
            print(f'check {shape} {name:12s} seed {seed} ' + ' '.join(f'{k} {v:.2e}' for k, v in errs.items())
                  + f' {"ok" if ok else "FAIL"} (< {limit:g})', flush=True)
    return rows


def tile_sweep(kernels, shape, dtype_name):
    """Times conv (forward) and wgrad tile variants on one shape; the first of each is the default."""
    N, C, H, W, K = shape
    x, w, gy = make_inputs(shape, DTYPES[dtype_name])
    w = w.to(x.dtype)  # the kernels alone: the weight as launch_conv hands it to them
    rows = []
    size = x.element_size()
    for params in [None] + CONV_VARIANTS[kernels.conv_config(N, H, W, K, size)['kernel']]:
        cfg = kernels.conv_config(N, H, W, K, size, **(params or {}))
        rows.append(_time_variant('conv', shape, dtype_name, params, lambda: kernels.launch_conv(x, w, config=cfg)))
    for params in [None] + WGRAD_VARIANTS:
        cfg = kernels.wgrad_config(N, C, H, W, K, size, kernels.num_sms(x.device), **(params or {}))
        rows.append(_time_variant('wgrad', shape, dtype_name, params,
                                  lambda: kernels.launch_weight_grad(x, gy, K, config=cfg)))
    return rows


def _time_variant(kernel, shape, dtype_name, params, fn):
    try:
        ms = bench(fn)
    except Exception as exc:  # a variant may not compile (shared memory, registers); report and go on
        ms, params = float('nan'), dict(params or {}, error=str(exc).splitlines()[0][:120])
    print(f'tile-sweep {kernel:5s} {shape} {dtype_name} {params or "default"}: {ms:.3f} ms', flush=True)
    return dict(kernel=kernel, shape=shape, dtype=dtype_name, params=params or 'default', ms=ms)


def time_shape(ops, shape, dtype_name):
    kernels = ops.triton_dwconv
    N, C, H, W, K = shape
    x, w, gy = make_inputs(shape, DTYPES[dtype_name])
    flops = 2 * N * C * H * W * K * K
    row = dict(shape=shape, dtype=dtype_name, fwd_gflop=flops / 1e9)
    ours = lambda x, w: ops.depthwise_conv2d(x, w, impl='triton')  # noqa: E731
    for impl, conv in [('torch', torch_conv), ('triton', ours)]:
        row[f'{impl}_fwd_ms'] = bench(lambda: conv(x, w))
        row[f'{impl}_fwdbwd_ms'] = bench(fwd_bwd(conv, x, w, gy))
        row[f'{impl}_fwdbwd_graph_ms'] = bench_graph(fwd_bwd(conv, x, w, gy))
        row[f'{impl}_fwdbwd_host_ms'] = host_ms(fwd_bwd(conv, x, w, gy))
    w_flipped = w.to(x.dtype).flip((-2, -1)).contiguous()  # as the input gradient gets it: cast by the forward
    row['triton_dgrad_ms'] = bench(lambda: kernels.launch_conv(gy, w_flipped))
    row['triton_wgrad_ms'] = bench(lambda: kernels.launch_weight_grad(x, gy, K))
    row['fwd_speedup'] = row['torch_fwd_ms'] / row['triton_fwd_ms']
    row['fwdbwd_speedup'] = row['torch_fwdbwd_ms'] / row['triton_fwdbwd_ms']
    row['host_ratio'] = row['triton_fwdbwd_host_ms'] / row['torch_fwdbwd_host_ms']
    row['triton_fwdbwd_tflops'] = 3 * flops / row['triton_fwdbwd_ms'] / 1e9
    row['floor_fwdbwd_ms'] = 3 * flops / FP32_FLOOR_TFLOPS / 1e9
    row['vs_floor'] = row['triton_fwdbwd_ms'] / row['floor_fwdbwd_ms']
    row['graph_speedup'] = row['torch_fwdbwd_graph_ms'] / row['triton_fwdbwd_graph_ms']
    row['graph_vs_floor'] = row['triton_fwdbwd_graph_ms'] / row['floor_fwdbwd_ms']
    return row


def geomean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def print_table(rows):
    print('\n| N, C, H, W, K | dtype | torch fwd | ours fwd | x | torch fwd+bwd | ours fwd+bwd | x '
          '| ours TFLOP/s | ours / floor | graphed: torch | ours | x | ours / floor | host: torch | ours |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f'| {", ".join(map(str, r["shape"]))} | {r["dtype"]} | {r["torch_fwd_ms"]:.3f} '
              f'| {r["triton_fwd_ms"]:.3f} | {r["fwd_speedup"]:.1f} | {r["torch_fwdbwd_ms"]:.3f} '
              f'| {r["triton_fwdbwd_ms"]:.3f} '
              f'| {r["fwdbwd_speedup"]:.1f} | {r["triton_fwdbwd_tflops"]:.1f} | {r["vs_floor"]:.2f} '
              f'| {r["torch_fwdbwd_graph_ms"]:.3f} | {r["triton_fwdbwd_graph_ms"]:.3f} | {r["graph_speedup"]:.1f} '
              f'| {r["graph_vs_floor"]:.2f} | {r["torch_fwdbwd_host_ms"]:.3f} | {r["triton_fwdbwd_host_ms"]:.3f} |')
    for dtype in sorted({r['dtype'] for r in rows}):
        sel = [r for r in rows if r['dtype'] == dtype]
        print(f'{dtype}: geometric-mean speed-up fwd {geomean(r["fwd_speedup"] for r in sel):.1f}x, '
              f'fwd+bwd {geomean(r["fwdbwd_speedup"] for r in sel):.1f}x, '
              f'graphed fwd+bwd {geomean(r["graph_speedup"] for r in sel):.1f}x, '
              f'host ours/torch {geomean(r["host_ratio"] for r in sel):.2f}x', flush=True)


def deploy_rows(ops, shape, dtype_name):
    """Eval forward: merged conv with bias against the large-kernel branch + BN and the whole training form."""
    C = shape[1]
    dtype = DTYPES[dtype_name]
    x, w, _ = make_inputs(shape, dtype)
    w_small = torch.randn(C, 1, SMALL_KERNEL, SMALL_KERNEL, device='cuda') / SMALL_KERNEL
    stats = [torch.rand(C, device='cuda') + 0.5 for _ in range(4)]  # mean, var, weight, bias: fp32 as under autocast
    bias = torch.randn(C, device='cuda')
    conv = lambda x, w, b=None: ops.depthwise_conv2d(x, w, b, impl='triton')  # noqa: E731
    bn = lambda y: F.batch_norm(y, stats[0], stats[1], stats[2], stats[3], False, 0.0, 1e-5)  # noqa: E731
    forms = dict(merged=lambda: conv(x, w, bias), large_branch_bn=lambda: bn(conv(x, w)),
                 training_form=lambda: bn(conv(x, w)) + bn(conv(x, w_small)))
    row = dict(shape=shape, dtype=dtype_name)
    with torch.no_grad():
        for name, fn in forms.items():
            row[f'{name}_ms'] = bench(fn)
            row[f'{name}_graph_ms'] = bench_graph(fn)
    print(json.dumps(row), flush=True)
    return row


def stage_shapes(N, height, width, kernels=lambda K: (K,)):
    """(N, C, H, W, K) of RepLKNet-31B's convs on an N x 3 x height x width input: every stage's map, with the
    kernel sizes ``kernels`` gives for its large kernel K."""
    return [(N, C, height // stride, width // stride, k) for stride, C, K in STAGES for k in kernels(K)]


def parse_shapes(specs):
    """``--shapes``: 'N,C,H,W,K' each, or 'detection' for every conv of RepLKNet-31B at :data:`DETECTION_IMAGE`."""
    if not specs:
        return SHAPES
    shapes = []
    for spec in specs:
        if spec == 'detection':
            shapes += stage_shapes(*DETECTION_IMAGE, kernels=lambda K: (K, SMALL_KERNEL))
            continue
        try:
            shape = tuple(int(v) for v in spec.split(','))
        except ValueError:
            shape = ()
        if len(shape) != 5 or min(shape) < 1 or shape[4] % 2 == 0:
            raise SystemExit(f"--shapes: expected 'N,C,H,W,K' (positive integers, K odd) or 'detection', got {spec!r}")
        shapes.append(shape)
    return shapes


def detection_sizes(count, seed=0):
    """Multi-scale detection inputs: shorter side 480-800 (step 32), long side <= 1333, aspect 1:2-2:1, padded to 32."""
    rng = random.Random(seed)
    sizes = []
    while len(sizes) < count:
        short, aspect = rng.choice(range(480, 801, 32)), math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        h, w = 1000.0, 1000.0 * aspect
        scale = min(short / min(h, w), 1333 / max(h, w))
        size = tuple(int(math.ceil(round(v * scale) / 32) * 32) for v in (h, w))
        if size not in sizes:
            sizes.append(size)
    return sizes


def sizes_sweep(ops, dtype_names, count, batch=2):
    """Each new input size's first fwd+bwd at every stage against its steady state; compile counts."""
    kernels = ops.triton_dwconv
    rows, seen = [], set()
    sizes = detection_sizes(count)
    for dtype_name in dtype_names:
        dtype = DTYPES[dtype_name]
        for height, width in sizes:
            for shape in stage_shapes(batch, height, width):
                _, C, H, W, K = shape
                step = fwd_bwd(lambda x, w: ops.depthwise_conv2d(x, w, impl='triton'), *make_inputs(shape, dtype))
                compiled_before = compiled_kernels(kernels)
                torch.cuda.synchronize()
                start = time.perf_counter()
                step()
                torch.cuda.synchronize()
                first_ms = (time.perf_counter() - start) * 1e3
                compiled_now = compiled_kernels(kernels)
                steady_ms = bench(step, rep=25)
                first_of_kind = (K, dtype_name) not in seen
                seen.add((K, dtype_name))
                ok = first_of_kind or first_ms <= 3 * steady_ms + 2
                rows.append(dict(dtype=dtype_name, image=(height, width), map=(batch, C, H, W), K=K,
                                 first_ms=first_ms, steady_ms=steady_ms, first_of_kind=first_of_kind, ok=ok,
                                 compiled_during=compiled_now - compiled_before, compiled_total=compiled_now))
                print(f'sweep {dtype_name} image {height}x{width} map {H}x{W} K {K}: first {first_ms:.2f} ms, '
                      f'steady {steady_ms:.3f} ms, compiled {compiled_now - compiled_before} (total {compiled_now})'
                      f'{"" if ok else " SLOW FIRST CALL"}', flush=True)
    later = [r for r in rows if not r['first_of_kind']]
    summary = dict(sizes=len(sizes), rows=len(rows), later_rows=len(later), later_ok=sum(r['ok'] for r in later),
                   worst_later_first_over_steady=max(r['first_ms'] / r['steady_ms'] for r in later),
                   compiled_total=compiled_kernels(kernels), variants=len(kernels.variants),
                   compiled_after_first_size=sum(r['compiled_during'] for r in later))
    print('sweep summary:', json.dumps(summary), flush=True)
    return dict(rows=rows, summary=summary)


def step_ms(fn, warmup=3, repeats=10):
    """Median ms of ``fn`` on the GPU (replk_mm.apis.timing's timer, the one of every benchmark tool)."""
    from replk_mm.apis.timing import time_call
    return statistics.median(time_call(fn, 'cuda', warmup, repeats)) * 1e3


def compile_check(ops):
    """opcheck on CUDA; RepLKNet-31B under torch.compile(fullgraph=True): eager vs compiled vs CUDA graphs."""
    result = dict(opcheck={})
    torch.manual_seed(0)
    for dtype_name in ('fp32', 'bf16'):
        x = torch.randn(2, 8, 20, 72, device='cuda', dtype=DTYPES[dtype_name], requires_grad=True)
        w = torch.randn(8, 1, 13, 13, device='cuda', requires_grad=True)
        b = torch.randn(8, device='cuda', requires_grad=True)
        for name, args in (('bias', (x, w, b)), ('nobias', (x, w, None))):
            report = torch.library.opcheck(torch.ops.replk_mm.depthwise_conv2d.default, args)
            result['opcheck'][f'{dtype_name}-{name}'] = report
            print('opcheck cuda', dtype_name, name, report, flush=True)
    RepLKNet = load_backbone()
    x = torch.randn(8, 3, 512, 512, device='cuda')
    model = RepLKNet('31B', drop_path_rate=0.0).cuda().train()

    def train_step(net):
        with torch.autocast('cuda', dtype=torch.bfloat16):
            loss = sum(o.float().mean() for o in net(x))
        loss.backward()

    result['eager_fwdbwd_ms'] = step_ms(lambda: train_step(model))
    print('RepLKNet-31B 8x3x512x512 bf16 eager fwd+bwd', result['eager_fwdbwd_ms'], 'ms', flush=True)
    for mode in ('default', 'reduce-overhead'):
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, mode=mode)
        start = time.perf_counter()
        try:
            train_step(compiled)
            torch.cuda.synchronize()
        except Exception as exc:  # report, don't stop the run
            result[mode] = dict(error=str(exc)[:2000])
            print('compile', mode, 'FAILED', str(exc)[:2000], flush=True)
            continue
        first_s = time.perf_counter() - start
        result[mode] = dict(first_step_s=first_s, fwdbwd_ms=step_ms(lambda: train_step(compiled)))
        print(f'RepLKNet-31B compiled fullgraph mode={mode}: first step {first_s:.1f} s, '
              f'fwd+bwd {result[mode]["fwdbwd_ms"]:.2f} ms', flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dtypes', nargs='+', default=['fp32', 'bf16'], choices=sorted(DTYPES))
    parser.add_argument('--shapes', nargs='+', metavar='N,C,H,W,K',
                        help="shapes to time instead of the five fixed ones; 'detection': RepLKNet-31B's convs at "
                             f"{DETECTION_IMAGE[0]} x 3 x {DETECTION_IMAGE[1]} x {DETECTION_IMAGE[2]}")
    parser.add_argument('--check', action='store_true', help='compare with float64 on the full shapes first')
    parser.add_argument('--deploy', action='store_true', help='merged conv + bias against branches + BN (eval)')
    parser.add_argument('--sizes-sweep', action='store_true', help='first call vs steady state at detection sizes')
    parser.add_argument('--sweep-sizes', type=int, default=50, help='input sizes of --sizes-sweep')
    parser.add_argument('--sweep-dtypes', nargs='+', default=['fp16', 'bf16'], choices=sorted(DTYPES))
    parser.add_argument('--compile-check', action='store_true', help='opcheck on CUDA, torch.compile of RepLKNet-31B')
    parser.add_argument('--tile-sweep', action='store_true', help='also time tile variants of each kernel')
    parser.add_argument('--out', help='write all numbers as JSON here')
    args = parser.parse_args()
    shapes = parse_shapes(args.shapes)

    import triton
    ops = load_ops()
    kernels = ops.triton_dwconv
    env = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               cuda=torch.version.cuda, command=' '.join(sys.argv))
    print(env, flush=True)
    result = dict(env=env)

    def save():
        result['compiled_kernels'] = compiled_kernels(kernels)
        result['direct_launch'] = kernels.direct_launch  # False: the direct launch path turned itself off
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))

    # The fixed-shape sections time steady states: compile only the classes they meet.
    kernels.precompile_size_classes = False
    if args.check:
        result['check'] = [r for shape in shapes for r in float64_check_rows(ops, shape)]
        save()
    result['timings'] = []
    for dtype_name, shape in itertools.product(args.dtypes, shapes):
        result['timings'].append(time_shape(ops, shape, dtype_name))
        print(json.dumps(result['timings'][-1]), flush=True)
    save()
    print_table(result['timings'])
    if args.deploy:
        result['deploy'] = [deploy_rows(ops, shape, d) for d, shape in itertools.product(args.dtypes, shapes)]
        save()
    if args.tile_sweep:
        result['tile_sweep'] = [r for shape, d in itertools.product(shapes, args.dtypes)
                                for r in tile_sweep(kernels, shape, d)]
        save()
    kernels.precompile_size_classes = True
    for enabled, name, section in [(args.sizes_sweep, 'sizes_sweep', lambda: sizes_sweep(ops, args.sweep_dtypes,
                                                                                         args.sweep_sizes)),
                                   (args.compile_check, 'compile', lambda: compile_check(ops))]:
        if enabled:
            try:
                result[name] = section()
            except Exception as exc:  # keep what the other sections measured
                result[name] = dict(error=repr(exc)[:2000])
                print(name, 'FAILED', repr(exc)[:2000], flush=True)
            result['precompile_size_classes'] = kernels.precompile_size_classes
            save()
    print_table(result['timings'])
    if args.check and not all(r['ok'] for r in result['check']):
        sys.exit('correctness check failed')


if __name__ == '__main__':
    main()
