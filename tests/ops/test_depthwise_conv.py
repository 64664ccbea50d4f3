"""Depthwise conv: the Triton kernels against float64, the torch op, and the PyTorch fallback and dispatch.

The kernels run on the CPU in Triton's interpreter. ``triton.jit`` decides whether to interpret
when the kernels are defined, that is when ``replk_mm.ops.triton_dwconv`` is first imported, and
other tests of this process may have imported it already. So ``test_triton_kernels_in_interpreter``
runs the ``test_interpreted_*`` cases in a fresh pytest process with ``TRITON_INTERPRET=1``; in a
process started with that variable they run directly.
"""
import collections
import itertools
import json
import os
import subprocess
import sys
import time
import types
import warnings
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from replk_mm.numerics import relative_error
from replk_mm.ops import DepthwiseConv2d, depthwise_conv2d
from replk_mm.ops import depthwise_conv as dispatch

INTERPRET = os.environ.get('TRITON_INTERPRET') == '1'
ROOT = Path(__file__).resolve().parents[2]
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}

# (N, C, H, W, K, dtype, bias, layout, kernel path the shape takes); tiny, with ragged sizes.
CASES = [
    (2, 5, 13, 17, 5, torch.float32, True, 'contiguous', 'plane'),
    (1, 3, 7, 9, 31, torch.float32, False, 'channels_last', 'plane'),
    (2, 3, 17, 19, 7, torch.float32, True, 'channels_last', 'rows'),
    (1, 2, 5, 70, 31, torch.float32, True, 'sliced', 'rows-halo'),
    (2, 3, 13, 17, 3, torch.bfloat16, True, 'contiguous', 'plane'),
    (1, 2, 3, 90, 13, torch.bfloat16, False, 'channels_last', 'rows-halo'),
    (2, 4, 9, 11, 13, torch.float16, True, 'sliced', 'plane'),
    (1, 3, 18, 18, 3, torch.float16, False, 'contiguous', 'rows'),
]


def _case_id(case):
    N, C, H, W, K, dtype, bias, layout, path = case
    return f'{N}x{C}x{H}x{W}-k{K}-{str(dtype)[6:]}-{"bias" if bias else "nobias"}-{layout}'


def _input(N, C, H, W, dtype, layout):
    if layout == 'sliced':  # every other channel of a wider tensor: not contiguous
        return torch.randn(N, 2 * C, H, W).to(dtype)[:, ::2]
    x = torch.randn(N, C, H, W).to(dtype)
    return x.to(memory_format=torch.channels_last) if layout == 'channels_last' else x


def assert_close_to_float64(name, got, want, tol):
    """Relative error of the whole tensor below ``tol``, and every element within ``tol`` of its scale."""
    err = relative_error(got, want)
    assert err < tol, f'{name}: relative error {err:.2e} >= {tol:g}'
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * want.abs().max().item(), msg=name)


def _shift_sum_reference(x, weight, bias=None):
    """Depthwise same-padded conv in float64 as a sum of shifted maps: independent of conv2d."""
    K = weight.shape[-1]
    p = K // 2
    H, W = x.shape[-2:]
    padded = F.pad(x.double(), [p] * 4)
    out = sum(padded[:, :, kh:kh + H, kw:kw + W] * weight.double()[:, 0, kh, kw].reshape(1, -1, 1, 1)
              for kh in range(K) for kw in range(K))
    return out if bias is None else out + bias.double().reshape(1, -1, 1, 1)


def check_against_float64(x, weight, bias, tol, grad_out=None, input_grad=True):
    """Forward and every gradient of the op (impl='triton') against F.conv2d in float64 on the same values."""
    x = x.detach().requires_grad_(input_grad)
    weight = weight.detach().requires_grad_()
    bias = None if bias is None else bias.detach().requires_grad_()
    out = depthwise_conv2d(x, weight, bias, impl='triton')
    grad_out = torch.randn(out.shape).to(out.dtype) if grad_out is None else grad_out
    out.backward(grad_out)

    ref_inputs = [t.detach().double().requires_grad_() for t in (x, weight) + ((bias, ) if bias is not None else ())]
    ref = F.conv2d(*ref_inputs, padding=weight.shape[-1] // 2, groups=x.shape[1])
    ref.backward(grad_out.double())

    assert out.dtype == x.dtype and out.shape == ref.shape
    assert weight.grad.dtype == weight.dtype
    pairs = [('output', out, ref), ('grad_weight', weight.grad, ref_inputs[1].grad)]
    if input_grad:
        assert x.grad.dtype == x.dtype
        pairs.append(('grad_input', x.grad, ref_inputs[0].grad))
    else:
        assert x.grad is None
    if bias is not None:
        assert bias.grad.dtype == bias.dtype
        pairs.append(('grad_bias', bias.grad, ref_inputs[2].grad))
    for name, got, want in pairs:
        assert_close_to_float64(name, got, want, tol)


def set_env_impl(monkeypatch, value):
    """REPLK_DWCONV_IMPL as if the process had started with it (None: unset): it is read once per process."""
    if value is None:
        monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(dispatch.ENV_VAR, value)
    monkeypatch.setattr(dispatch, '_env_impl', None)


def _needs_interpreter():
    pytest.importorskip('triton')
    if not INTERPRET:
        pytest.skip('runs in the interpreter subprocess of test_triton_kernels_in_interpreter')


@pytest.mark.parametrize('case', CASES, ids=_case_id)
def test_interpreted_kernels_match_float64(case):
    _needs_interpreter()
    from replk_mm.ops import triton_dwconv
    N, C, H, W, K, dtype, bias, layout, path = case
    torch.manual_seed(zlib.crc32(_case_id(case).encode()))
    x = _input(N, C, H, W, dtype, layout)
    weight = torch.randn(C, 1, K, K)
    b = torch.randn(C) if bias else None
    assert triton_dwconv.size_class(H, W)[0] == path
    assert triton_dwconv.supports(x, K, weight.device)
    # The weight stays float32 (as under autocast); launch_conv casts it to the input dtype.
    check_against_float64(x, weight, b, TOL[dtype])


# 24 map sizes at one K (every size class: plane, whole-width rows and halo tiles, rows aligned to 16 bytes,
# 8 bytes or neither), then 12 more whose size classes the first ones already met.
SIZES = [(3, 5), (5, 7), (7, 7), (7, 10), (4, 8), (20, 14), (14, 14), (18, 16), (19, 15), (15, 19), (20, 24),
         (17, 33), (19, 40), (24, 48), (10, 50), (9, 56), (6, 61), (5, 64), (4, 65), (9, 30), (5, 84), (3, 98),
         (3, 100), (2, 131)]
MORE_SIZES = [(6, 6), (15, 15), (12, 20), (21, 28), (18, 36), (7, 52), (8, 60), (3, 68), (4, 88), (2, 112),
              (17, 21), (25, 15)]


def test_interpreted_new_sizes_compile_nothing_new():
    """Kernels specialise on size classes, never on H or W: unseen sizes of seen classes add no variant."""
    _needs_interpreter()
    from replk_mm.ops import triton_dwconv
    torch.manual_seed(7)
    K, before = 5, set(triton_dwconv.variants)
    for i, (H, W) in enumerate(SIZES):
        N = 1 + i % 2
        check_against_float64(torch.randn(N, 2, H, W), torch.randn(2, 1, K, K), torch.randn(2), 1e-4)
    first = triton_dwconv.variants - before
    classes = {triton_dwconv.size_class(H, W) for H, W in SIZES}
    assert len(SIZES) == 24 and len(classes) == 15
    # The maps the GPU compiles on first use of a (K, dtype) stand for every class met here.
    assert classes == {triton_dwconv.size_class(H, W) for N, H, W in triton_dwconv.CLASS_REPRESENTATIVES}
    # Per class: forward (with bias), input gradient (no bias); the weight gradient has six classes.
    assert len(first) <= 2 * len(classes) + 6, sorted(first)
    for H, W in MORE_SIZES:
        assert triton_dwconv.size_class(H, W) in classes
        check_against_float64(torch.randn(2, 2, H, W), torch.randn(2, 1, K, K), torch.randn(2), 1e-4)
    assert triton_dwconv.variants - before == first


def test_row_block_follows_the_rows_of_all_images():
    """Half a block where the rows fill at most half of one; the tiles the detection sweep found fastest."""
    from replk_mm.ops import triton_dwconv
    assert [triton_dwconv.row_block(rows, wide=False) for rows in (1, 128, 129, 400)] == [128, 128, 256, 256]
    assert [triton_dwconv.row_block(rows, wide=True) for rows in (50, 64, 65)] == [64, 64, 128]
    # 2 x 800 x 1216 (bf16): the stride-16 map, 32-column halo tiles; the stride-32 map, one 64-column tile.
    stride16, stride32 = triton_dwconv.conv_config(2, 50, 76, 27, 2), triton_dwconv.conv_config(2, 25, 38, 13, 2)
    assert (stride16['BLOCK_M'], stride16['BLOCK_WO'], stride16['num_warps']) == (128, 32, 8)
    assert (stride32['BLOCK_M'], stride32['BLOCK_WO'], stride32['num_warps']) == (64, 64, 4)
    assert triton_dwconv.conv_config(2, 100, 152, 29, 2)['BLOCK_M'] == 256  # 200 rows: whole blocks were faster


def _record_precompiles(monkeypatch, cached):
    """Triton's module with compiles recorded instead of run, as a CUDA machine would ask for them, every
    first compile of a batch taken as a cache load if ``cached``, else as a compile; returns the module, the
    set of compiled variants and the list of batch sizes sent to the workers."""
    pytest.importorskip('triton')
    if INTERPRET:
        pytest.skip('runs in the parent process')
    from replk_mm.ops import triton_dwconv
    compiled, batches = set(), []
    monkeypatch.setattr(triton_dwconv, 'INTERPRET', False)
    monkeypatch.setattr(triton_dwconv, '_available', True)
    monkeypatch.setattr(triton_dwconv, 'precompile_size_classes', True)
    monkeypatch.setattr(triton_dwconv, '_precompiled', set())
    monkeypatch.setattr(triton_dwconv, 'CACHE_LOAD_S', float('inf') if cached else -1.0)
    monkeypatch.setattr(triton_dwconv, 'num_sms', lambda device: 132)
    monkeypatch.setattr(triton_dwconv._Launch, 'compile', lambda launch, device: compiled.add(launch.variant))
    monkeypatch.setattr(triton_dwconv, 'compile_in_workers', lambda plans, device: batches.append(len(plans)))
    triton_dwconv._conv_launch.cache_clear()
    triton_dwconv._wgrad_launch.cache_clear()
    return triton_dwconv, compiled, batches


def test_first_call_compiles_every_size_class(monkeypatch):
    """On CUDA the first plan of a (K, dtypes, flip) compiles what any later map size will launch (no GPU needed)."""
    triton_dwconv, compiled, batches = _record_precompiles(monkeypatch, cached=False)
    device, K, fp32 = torch.device('cuda', 0), 13, torch.float32
    # The first forward of a training step compiles its gradients' classes in the same batch.
    triton_dwconv._conv_launch((2, 8, 30, 40), K, (fp32, None), False, True, device, None, True)
    assert batches == [2 * 33 + 6 - 2] and len(compiled) == 2 * 33 + 6  # two here, the rest in workers
    for dtype in (fp32, torch.bfloat16):  # as under autocast: float32 bias (launch_conv casts the weight)
        for N, (H, W) in itertools.product((1, 2, 16, 40, 64), SIZES + MORE_SIZES + [(200, 336), (25, 42)]):
            plans = [triton_dwconv._conv_launch((N, 8, H, W), K, (dtype, fp32), False, True, device),
                     triton_dwconv._conv_launch((N, 8, H, W), K, (dtype, None), True, True, device),
                     triton_dwconv._wgrad_launch((N, 8, H, W), K, (dtype, dtype), True, device)]
            for plan in plans:
                assert plan.variant in compiled, (N, H, W, plan.variant)
    # Per dtype: 33 conv classes (3 batch classes x 3 alignments of 'plane', 4 tiles x 3 alignments x 2 row
    # blocks of 'rows'), forward (with bias) and input gradient (flipped), and the wgrad classes, 3 alignments
    # x 2 map sizes (up to 256 pixels or more; bfloat16: up to 128, 256 or more); the float32 forward without
    # bias of the first batch besides.
    assert len(compiled) == (2 * 33 + 6) + (2 * 33 + 9) + 33
    # Later plans asked for alone: the forward with bias per dtype, bfloat16's input and weight gradients.
    assert batches[1:] == [33 - 2, 33 - 2, 33 - 2, 9 - 2]


def test_no_compile_workers_start_where_the_first_kernel_came_from_the_cache(monkeypatch):
    """A batch whose first plan loads fast (Triton's on-disk cache) compiles the rest in this process."""
    triton_dwconv, compiled, batches = _record_precompiles(monkeypatch, cached=True)
    fp32 = torch.float32
    triton_dwconv._conv_launch((2, 8, 30, 40), 13, (fp32, None), False, True, torch.device('cuda', 0))
    assert batches == [] and len(compiled) == 33  # every class compiled (loaded) here, no worker started


def test_a_slow_first_load_alone_starts_no_compile_workers(monkeypatch):
    """A process's first kernel load also pays Triton's start-up: a fast second plan shows the batch is cached."""
    triton_dwconv, compiled, batches = _record_precompiles(monkeypatch, cached=True)
    monkeypatch.setattr(triton_dwconv, 'CACHE_LOAD_S', 0.05)

    def compile_slowly_once(launch, device):
        if not compiled:
            time.sleep(0.1)
        compiled.add(launch.variant)

    monkeypatch.setattr(triton_dwconv._Launch, 'compile', compile_slowly_once)
    triton_dwconv._conv_launch((2, 8, 30, 40), 13, (torch.float32, None), False, True, torch.device('cuda', 0))
    assert batches == [] and len(compiled) == 33


def test_a_model_compiles_all_its_kernel_sizes_in_one_batch(monkeypatch):
    """RepLKNet's first CUDA call compiles every large and small kernel size at once (one start of the workers);
    its convs' own first calls then find their plans compiled."""
    triton_dwconv, compiled, batches = _record_precompiles(monkeypatch, cached=False)
    from replk_mm.models import RepLKNet
    from replk_mm.ops import precompile_kernels
    model = RepLKNet(arch=dict(large_kernel_sizes=[13, 11, 9, 7], layers=[1, 1, 1, 1], channels=[8, 8, 8, 8],
                               small_kernel=5, dw_ratio=1))
    device, bf16 = torch.device('cuda', 0), torch.bfloat16
    cuda_input = types.SimpleNamespace(is_cuda=True, device=device)  # all that the layers' dispatch reads
    precompile_kernels(model, cuda_input, bf16, backward=True)
    assert len(batches) == 1
    kernels = len(compiled)
    assert batches[0] == kernels - 2  # the first two plans in this process (they took long: the rest in workers)
    for K in (13, 11, 9, 7, 5):  # what the convs' calls in a bf16 training step ask for
        triton_dwconv._conv_launch((2, 8, 40, 56), K, (bf16, None), False, True, device, None, True)
        triton_dwconv._wgrad_launch((2, 8, 40, 56), K, (bf16, bf16), True, device)
    assert len(batches) == 1 and len(compiled) == kernels
    precompile_kernels(model, cuda_input, bf16, backward=True)  # compiled already: nothing more
    assert len(batches) == 1


def _plans_without_precompile(monkeypatch, triton_dwconv):
    """A 'rows' conv with a float32 bias (bf16 input and weight), a 'plane' conv and a weight gradient plan."""
    monkeypatch.setattr(triton_dwconv, 'precompile_size_classes', False)
    monkeypatch.setattr(triton_dwconv, 'num_sms', lambda device: 132)
    device, fp32, bf16 = torch.device('cuda', 0), torch.float32, torch.bfloat16
    return device, [triton_dwconv._conv_launch((2, 8, 30, 40), 13, (bf16, fp32), False, True, device),
                    triton_dwconv._conv_launch((64, 8, 7, 7), 13, (fp32, None), True, False, device),
                    triton_dwconv._wgrad_launch((2, 8, 30, 40), 13, (bf16, bf16), True, device)]


def test_compile_job_repeats_the_plans_compile_from_json(monkeypatch):
    """A compile worker gets a plan as JSON and calls Triton's warmup exactly as the plan's own compile would."""
    pytest.importorskip('triton')
    if INTERPRET:
        pytest.skip('runs in the parent process')
    from replk_mm.ops import triton_dwconv
    device, plans = _plans_without_precompile(monkeypatch, triton_dwconv)
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 0)
    calls = []
    for kernel in (triton_dwconv._conv_rows_kernel, triton_dwconv._conv_plane_kernel, triton_dwconv._wgrad_kernel):
        monkeypatch.setattr(kernel, 'warmup', lambda *args, name=kernel.__name__, **kwargs: calls.append(
            (name, args, kwargs)))
    assert [plan.kernel.__name__ for plan in plans] == ['_conv_rows_kernel', '_conv_plane_kernel', '_wgrad_kernel']
    for plan in plans:
        triton_dwconv.compile_job(json.loads(json.dumps(plan.job(device))))
        name, args, kwargs = calls.pop()
        assert name == plan.kernel.__name__
        assert args == (*plan.pointer_dtypes, *[1] * len(plan.sizes))
        assert kwargs == dict(grid=plan.grid, **plan.meta)


def test_failed_compile_workers_warn_and_leave_the_compile_to_this_process(monkeypatch):
    """Workers that cannot compile (no GPU here) cost a warning with their error, and are not started again."""
    pytest.importorskip('triton')
    if INTERPRET or torch.cuda.is_available():
        pytest.skip('needs a machine where the workers fail: no GPU, not interpreting')
    from replk_mm.ops import triton_dwconv
    device, plans = _plans_without_precompile(monkeypatch, triton_dwconv)
    monkeypatch.setattr(triton_dwconv, '_workers_failed', False)
    with pytest.warns(UserWarning, match=r'compile worker failed(.|\n)*worker 0 \(exit 1\)(.|\n)*(CUDA|cuda)'):
        assert triton_dwconv.compile_in_workers(plans + plans, device, workers=2) == 0
    monkeypatch.setattr(subprocess, 'Popen', None)  # a second attempt would fail on this
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert triton_dwconv.compile_in_workers(plans + plans, device, workers=2) == 0


def test_compile_workers_setting(monkeypatch):
    from replk_mm.ops import triton_dwconv
    monkeypatch.setenv(triton_dwconv.COMPILE_WORKERS_ENV, '0')
    assert triton_dwconv.compile_workers() == 0
    monkeypatch.setenv(triton_dwconv.COMPILE_WORKERS_ENV, 'four')
    with pytest.raises(ValueError, match="REPLK_DWCONV_COMPILE_WORKERS: expected a number .* got 'four'"):
        triton_dwconv.compile_workers()
    monkeypatch.delenv(triton_dwconv.COMPILE_WORKERS_ENV)
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '64')  # more processes than cores: none left for workers
    assert triton_dwconv.compile_workers() == 0


def test_interpreted_row_blocks_span_images():
    """'rows' kernel with several row blocks, blocks holding the end of one image and the start of the next."""
    _needs_interpreter()
    from replk_mm.ops import triton_dwconv
    torch.manual_seed(3)
    N, C, H, W, K = 4, 2, 10, 20, 7
    x, w, b = torch.randn(N, C, H, W), torch.randn(C, 1, K, K), torch.randn(C)
    cfg = triton_dwconv.conv_config(N, H, W, K, 4, kernel='rows', block_m=16)
    assert cfg['kernel'] == 'rows' and N * H > 2 * cfg['BLOCK_M'] and cfg['BLOCK_M'] % H != 0
    assert_close_to_float64('rows', triton_dwconv.launch_conv(x, w, b, config=cfg), _shift_sum_reference(x, w, b),
                             1e-4)
    # halo tiles, several of them
    cfg = triton_dwconv.conv_config(N, H, W, K, 4, kernel='rows', block_m=16, block_wo=16)
    assert cfg['COL_OFF'] > 0 and W > cfg['BLOCK_WO']
    assert_close_to_float64('rows-halo', triton_dwconv.launch_conv(x, w, None, config=cfg),
                             _shift_sum_reference(x, w), 1e-4)


@pytest.mark.parametrize('N, C, H, W, K, path', [(2, 3, 6, 7, 5, 'plane'), (1, 2, 18, 20, 5, 'rows'),
                                                 (1, 2, 5, 70, 7, 'rows-halo')])
def test_interpreted_weight_read_turned(N, C, H, W, K, path):
    """FLIP reads the kernel turned 180 degrees: the same bits as flipping the weight beforehand."""
    _needs_interpreter()
    from replk_mm.ops import triton_dwconv
    torch.manual_seed(12)
    x, w, b = torch.randn(N, C, H, W).half(), torch.randn(C, 1, K, K).half(), torch.randn(C)
    assert triton_dwconv.size_class(H, W)[0] == path
    want = triton_dwconv.launch_conv(x, w.flip((-2, -1)).contiguous(), b)
    torch.testing.assert_close(triton_dwconv.launch_conv(x, w, b, flip=True), want, rtol=0, atol=0)


def test_float32_weight_reaches_the_kernel_in_the_inputs_dtype(monkeypatch):
    """Under autocast (bf16 input, float32 weight and bias) the kernel gets the weight cast to bf16: kernels
    that read the float32 weight ran 3-10x slower on the GPU. The bias is passed as it is."""
    pytest.importorskip('triton')
    from replk_mm.ops import triton_dwconv
    launched = []

    def conv_launch(shape, K, dtypes, flip, allow_tf32, device, config=None, backward=False):
        return lambda device, pointers: launched.append((dtypes, [p.dtype for p in pointers]))

    monkeypatch.setattr(triton_dwconv, '_conv_launch', conv_launch)
    x, w, b = torch.randn(1, 2, 6, 7).bfloat16(), torch.randn(2, 1, 5, 5), torch.randn(2)
    triton_dwconv.launch_conv(x, w, b)
    bf16, fp32 = torch.bfloat16, torch.float32
    assert launched == [((bf16, fp32), [bf16, bf16, fp32, bf16])]


def test_interpreted_plane_image_groups():
    """'plane' kernel with several groups of BLOCK_N images and several output-pixel blocks."""
    _needs_interpreter()
    from replk_mm.ops import triton_dwconv
    torch.manual_seed(4)
    N, C, H, W, K = 40, 1, 8, 9, 5
    x, w = torch.randn(N, C, H, W), torch.randn(C, 1, K, K)
    cfg = triton_dwconv.conv_config(N, H, W, K, 4, block_n=16)
    assert cfg['kernel'] == 'plane' and N > 2 * cfg['BLOCK_N'] and H * W > cfg['BLOCK_R']
    assert_close_to_float64('plane', triton_dwconv.launch_conv(x, w, config=cfg), _shift_sum_reference(x, w), 1e-4)


@pytest.mark.parametrize('per_image', [False, True])
def test_interpreted_weight_grad_split_over_programs(per_image):
    """The weight gradient summed by several programs (atomics), slices crossing image boundaries or
    (per_image) chunks padded at each image's end."""
    _needs_interpreter()
    from replk_mm.ops import triton_dwconv
    torch.manual_seed(5)
    N, C, H, W, K = 2, 2, 9, 13, 5
    x, gy = torch.randn(N, C, H, W), torch.randn(N, C, H, W)
    cfg = triton_dwconv.wgrad_config(N, C, H, W, K, 4, sms=1, block_t=16, per_image=per_image)
    programs = -(-N * H * W // cfg['T_PER_PROG'])
    assert programs >= 3 and (H * W) % cfg['T_PER_PROG'] != 0 and (H * W) % cfg['BLOCK_T'] != 0
    got = triton_dwconv.launch_weight_grad(x, gy, K, config=cfg)
    want = torch.nn.grad.conv2d_weight(x.double(), (C, 1, K, K), gy.double(), padding=K // 2, groups=C)
    assert_close_to_float64('grad_weight', got, want, 1e-4)


def test_interpreted_wide_tile_non_contiguous_grads():
    """33-64 columns (one 64-wide tile; 6 rows: a block of 64), non-contiguous weight and output gradient."""
    _needs_interpreter()
    from replk_mm.ops import triton_dwconv
    torch.manual_seed(6)
    N, C, H, W, K = 1, 2, 6, 56, 7
    cfg = triton_dwconv.conv_config(N, H, W, K, 4)
    assert (cfg['BLOCK_M'], cfg['BLOCK_WO'], cfg['COL_OFF']) == (64, 64, 0)
    weight = torch.randn(C, 1, K, K + 4)[..., 2:-2]
    grad_out = torch.randn(N, C, H, 2 * W)[..., ::2]
    assert not weight.is_contiguous() and not grad_out.is_contiguous()
    check_against_float64(torch.randn(N, C, H, W), weight, torch.randn(C), 1e-4, grad_out=grad_out)


def test_interpreted_input_without_grad():
    """Only the weight (and bias) need gradients: no input gradient is computed or returned."""
    _needs_interpreter()
    torch.manual_seed(8)
    check_against_float64(torch.randn(2, 3, 11, 12).bfloat16(), torch.randn(3, 1, 9, 9), torch.randn(3), 1e-2,
                           input_grad=False)


def test_interpreted_module_with_low_precision_input():
    """As under autocast: bf16 activations, float32 parameters; gradients keep their dtypes."""
    _needs_interpreter()
    torch.manual_seed(0)
    conv = DepthwiseConv2d(4, 7, bias=True, impl='triton')
    x = torch.randn(2, 4, 10, 12).bfloat16().requires_grad_()
    out = conv(x)
    out.float().square().sum().backward()
    assert out.dtype == torch.bfloat16 and x.grad.dtype == torch.bfloat16
    assert conv.weight.grad.dtype == torch.float32 and conv.bias.grad.dtype == torch.float32
    assert_close_to_float64('output', out, _shift_sum_reference(x.detach(), conv.weight, conv.bias), 1e-2)


def test_interpreted_dispatch(monkeypatch):
    """impl='triton' reaches the kernels on the CPU here; 'auto' keeps CPU tensors on PyTorch."""
    _needs_interpreter()
    from replk_mm.ops import triton_dwconv
    calls = []
    launch = triton_dwconv.launch_conv
    monkeypatch.setattr(triton_dwconv, 'launch_conv',
                        lambda *args, **kwargs: calls.append(1) or launch(*args, **kwargs))
    set_env_impl(monkeypatch, None)
    x, weight = torch.randn(1, 2, 6, 6), torch.randn(2, 1, 3, 3)
    want = _shift_sum_reference(x, weight)
    assert_close_to_float64('triton', depthwise_conv2d(x, weight, impl='triton'), want, 1e-5)
    assert len(calls) == 1
    assert_close_to_float64('auto', depthwise_conv2d(x, weight), want, 1e-5)
    assert len(calls) == 1


def test_triton_kernels_in_interpreter():
    pytest.importorskip('triton')
    if INTERPRET:
        pytest.skip('this process interprets already: the cases run directly')
    env = dict(os.environ, TRITON_INTERPRET='1')
    env.pop(dispatch.ENV_VAR, None)
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-k', 'interpreted',
                           str(Path(__file__))], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert 'skipped' not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]


class _OpRecorder(TorchDispatchMode):
    """Names of the aten ops that run under it."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_eager_call_launches_no_weight_flip_or_cast(monkeypatch):
    """As under autocast (bf16 input, float32 weight and bias): the forward casts the weight once, and both convs
    take that cast weight (the input gradient's turned by its kernel, no flip); gradients keep their dtypes."""
    from replk_mm.ops import triton_dwconv
    launches = []

    def launch_conv(x, w, bias, flip, backward=False):
        launches.append(('conv', w.dtype, flip, backward))
        return torch.empty_like(x)

    def launch_weight_grad(x, gy, K):
        launches.append(('wgrad', x.dtype, gy.dtype))
        return torch.zeros(x.shape[1], 1, K, K)

    monkeypatch.setattr(triton_dwconv, 'supports', lambda input, kernel_size, weight_device=None: True)
    monkeypatch.setattr(triton_dwconv, 'launch_conv', launch_conv)
    monkeypatch.setattr(triton_dwconv, 'launch_weight_grad', launch_weight_grad)
    x = torch.randn(2, 3, 8, 8).bfloat16().requires_grad_()
    w, b = torch.randn(3, 1, 5, 5, requires_grad=True), torch.randn(3, requires_grad=True)
    with _OpRecorder() as recorder:
        depthwise_conv2d(x, w, b, impl='triton').backward(torch.ones(2, 3, 8, 8, dtype=torch.bfloat16))
    # The forward says that gradients follow, so that their kernels compile with its own.
    assert launches == [('conv', torch.bfloat16, False, True), ('conv', torch.bfloat16, True, False),
                        ('wgrad', torch.bfloat16, torch.bfloat16)]
    assert recorder.ops.count('aten._to_copy') == 1 and not {'aten.flip', 'aten.copy_'} & set(recorder.ops), \
        recorder.ops
    assert x.grad.dtype == torch.bfloat16 and w.grad.dtype == b.grad.dtype == torch.float32


class _Compiled:
    """What Triton's compiler returns, as far as a launch reads it; its launcher records what it is given."""
    function, packed_metadata = 'function', ('num_warps', 'num_ctas', 'shared')

    def __init__(self, signature):
        self.src = types.SimpleNamespace(signature=signature)
        self.launches = []

    def run(self, *args):
        self.launches.append(args)

    def launch_metadata(self, grid, stream, *args):
        return ('metadata', grid, stream, args)


def _with_jit_kernels(monkeypatch, kind, compile_kernel=lambda kernel, signature: _Compiled(signature)):
    """A fresh launch plan of ``kind`` on the CPU (nothing compiles ahead) whose launches run Triton's own
    ``JITFunction.run`` against a stand-in driver and compiler (``compile_kernel``): no GPU needed. Direct
    launches on. Returns the plan, the cache keys Triton's launches compiled for, and the module."""
    pytest.importorskip('triton')
    if INTERPRET:
        pytest.skip('runs in the parent process')
    from triton.backends.compiler import GPUTarget

    from replk_mm.ops import triton_dwconv
    fp32, device = torch.float32, torch.device('cpu')
    if kind == 'wgrad':
        plan = triton_dwconv._wgrad_launch((2, 3, 20, 30), 7, (fp32, fp32), True, device)
    else:
        shape = {'plane': (2, 3, 9, 11), 'rows': (1, 3, 20, 30), 'rows-halo': (1, 3, 5, 80)}[kind]
        plan = triton_dwconv._conv_launch(shape, 7, (torch.bfloat16, fp32), True, True, device)
    driver = types.SimpleNamespace(get_current_device=lambda: 0, get_current_stream=lambda device_index: 'stream',
                                   get_current_target=lambda: GPUTarget('cuda', 90, 32))
    monkeypatch.setattr(triton_dwconv.triton.runtime.driver, '_active', driver)
    monkeypatch.setattr(triton_dwconv, 'direct_launch', True)
    kernel, keys = plan.kernel, []
    monkeypatch.setattr(kernel, 'device_caches', collections.defaultdict(kernel.create_binder))
    monkeypatch.setattr(kernel, '_do_compile', lambda key, signature, *args: keys.append(key)
                        or compile_kernel(kernel, signature))
    plan = triton_dwconv._Launch(kernel, plan.grid, plan.sizes, plan.meta, plan.pointer_dtypes)
    return plan, keys, triton_dwconv


def _same_arguments(got, want):
    """The same tensors (objects), everything else equal; tuples element by element."""
    return len(got) == len(want) and all(
        g is w or (_same_arguments(g, w) if isinstance(g, tuple) else not isinstance(g, torch.Tensor) and g == w)
        for g, w in zip(got, want))


# Triton 3.9's options parser asks for TRITON_DEFAULT_FP_FUSION to be set
ignore_fp_fusion_notice = pytest.mark.filterwarnings('ignore:TRITON_DEFAULT_FP_FUSION')


@ignore_fp_fusion_notice
@pytest.mark.parametrize('kind', ['plane', 'rows', 'rows-halo', 'wgrad'])
def test_direct_launch_repeats_tritons_launch(monkeypatch, kind):
    """A plan's first launch goes through Triton's own ``JITFunction.run``; later ones call the compiled kernel's
    launcher directly with exactly what Triton gave it: grid, stream, function, metadata, hooks, then every
    kernel parameter in signature order, constexprs included."""
    plan, keys, _ = _with_jit_kernels(monkeypatch, kind)
    pointers = tuple(torch.empty(64, dtype=dtype) for dtype in plan.pointer_dtypes)  # fresh: 16-byte aligned
    plan(torch.device('cpu'), pointers)
    plan(torch.device('cpu'), pointers)
    assert len(keys) == 1
    by_triton, direct = plan.compiled.launches
    assert len(by_triton) == 9 + len(plan.kernel.arg_names)
    assert all(got is pointer for got, pointer in zip(by_triton[9:], pointers))
    assert _same_arguments(direct, by_triton)


@ignore_fp_fusion_notice
def test_direct_launch_only_where_safe(monkeypatch):
    """Pointers not 16-byte aligned, which Triton compiles apart, go through Triton's launch; a compiled kernel not
    laid out as expected turns direct launches off for the process, without an error."""
    plan, keys, _ = _with_jit_kernels(monkeypatch, 'rows')
    device = torch.device('cpu')
    aligned = tuple(torch.empty(64, dtype=dtype) for dtype in plan.pointer_dtypes)
    misaligned = (torch.empty(65, dtype=plan.pointer_dtypes[0])[1:], *aligned[1:])
    for pointers in (misaligned, aligned, misaligned, aligned):
        plan(device, pointers)
    assert len(set(keys)) == 2 and len(keys) == 3  # Triton's launches: misaligned, aligned (kept), misaligned
    launches = plan.compiled.launches
    assert len(launches) == 2 and launches[1][9] is aligned[0]

    def without_constexpr(kernel, signature):  # a launcher that does not take every parameter
        return _Compiled({name: value for name, value in signature.items() if name != 'K'})

    for compile_kernel in (without_constexpr, lambda kernel, signature: None):  # None: what the interpreter gives
        plan, keys, triton_dwconv = _with_jit_kernels(monkeypatch, 'plane', compile_kernel)
        pointers = tuple(torch.empty(64, dtype=dtype) for dtype in plan.pointer_dtypes)
        plan(device, pointers)
        assert not triton_dwconv.direct_launch
        plan(device, pointers)
        assert len(keys) == 2 and plan.compiled is None


def test_op_passes_opcheck():
    """The torch.library op: schema, autograd registration, fake tensors and AOT dispatch (CPU)."""
    if INTERPRET:
        pytest.skip('the interpreter makes opcheck run the kernels many times: covered in the parent process')
    torch.manual_seed(9)
    op = torch.ops.replk_mm.depthwise_conv2d.default
    x = torch.randn(2, 3, 9, 11, requires_grad=True)
    w = torch.randn(3, 1, 5, 5, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    for args in [(x, w, b), (x, w, None), (x.detach(), w, b), (x.detach().bfloat16().requires_grad_(), w, None),
                 (x.detach().to(memory_format=torch.channels_last), w.detach(), None)]:
        assert set(torch.library.opcheck(op, args).values()) == {'SUCCESS'}, args
    weight_grad = torch.ops.replk_mm.depthwise_conv2d_weight_grad.default
    assert set(torch.library.opcheck(weight_grad, (x.detach(), torch.randn(2, 3, 9, 11), 5)).values()) == {'SUCCESS'}


def test_op_values_and_dtypes_on_cpu():
    """The op's CPU implementation: PyTorch's conv in the input's dtype, contiguous, right gradients."""
    torch.manual_seed(10)
    x = torch.randn(2, 3, 8, 9).to(memory_format=torch.channels_last).requires_grad_()
    w, b = torch.randn(3, 1, 7, 7, requires_grad=True), torch.randn(3, requires_grad=True)
    out = torch.ops.replk_mm.depthwise_conv2d(x, w, b)
    assert out.is_contiguous() and out.dtype == torch.float32
    assert_close_to_float64('output', out, _shift_sum_reference(x.detach(), w, b), 1e-5)
    grad_out = torch.randn(out.shape)
    out.backward(grad_out)
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    _shift_sum_reference(xd, wd, bd).backward(grad_out.double())
    for name, got, want in [('grad_input', x.grad, xd.grad), ('grad_weight', w.grad, wd.grad),
                            ('grad_bias', b.grad, bd.grad)]:
        assert_close_to_float64(name, got, want, 1e-5)
    low = torch.ops.replk_mm.depthwise_conv2d(x.detach().bfloat16(), w.detach(), b.detach())
    assert low.dtype == torch.bfloat16


def test_compiles_fullgraph_forward_and_backward():
    """torch.compile(fullgraph=True) keeps the op as one node forward and its two ops backward."""
    if INTERPRET:
        pytest.skip('runs in the parent process')
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    torch.manual_seed(11)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), DepthwiseConv2d(4, 7, bias=True, impl='triton'),
                              torch.nn.ReLU(), DepthwiseConv2d(4, 5, impl='triton'))
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append([str(node.target) for node in graph_module.graph.nodes if node.op == 'call_function'])
        return make_boxed_func(graph_module.forward)

    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, backend=aot_autograd(fw_compiler=record, bw_compiler=record))
    x = torch.randn(2, 3, 12, 10)
    compiled(x).square().sum().backward()
    compiled_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net(x).square().sum().backward()
    forward, backward = graphs
    assert forward.count('replk_mm.depthwise_conv2d.default') == 2
    assert backward.count('replk_mm.depthwise_conv2d_weight_grad.default') == 2
    assert 'aten.convolution_backward.default' in backward  # the 1x1 conv's, not ours
    for got, (name, p) in zip(compiled_grads, net.named_parameters()):
        torch.testing.assert_close(got, p.grad, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize('impl', ['torch', 'triton', 'auto'])
@pytest.mark.parametrize('bias', [False, True])
def test_every_impl_matches_shift_sum(impl, bias):
    """Whatever runs (PyTorch's conv, the op's CPU fallback), it equals the conv written as shifted sums."""
    torch.manual_seed(1)
    x, weight = torch.randn(2, 6, 11, 9), torch.randn(6, 1, 5, 5)
    b = torch.randn(6) if bias else None
    want = _shift_sum_reference(x, weight, b)
    assert_close_to_float64(impl, depthwise_conv2d(x, weight, b, impl=impl), want, 1e-5)
    x_cl = x.to(memory_format=torch.channels_last)
    assert_close_to_float64(f'{impl} channels_last', depthwise_conv2d(x_cl, weight, b, impl=impl), want, 1e-5)


def test_auto_falls_back_to_torch_on_cpu(monkeypatch):
    set_env_impl(monkeypatch, None)
    x, weight = torch.randn(1, 3, 8, 8), torch.randn(3, 1, 3, 3)
    if not INTERPRET:
        assert dispatch.resolve_impl('auto', x) == 'torch'
    assert_close_to_float64('auto', depthwise_conv2d(x, weight), _shift_sum_reference(x, weight), 1e-5)


def test_env_var_forces_impl(monkeypatch):
    x = torch.randn(1, 3, 8, 8)
    set_env_impl(monkeypatch, 'torch')
    assert dispatch.resolve_impl('auto', x) == 'torch'
    set_env_impl(monkeypatch, 'triton')
    assert dispatch.resolve_impl('auto', x) == 'triton'
    assert dispatch.resolve_impl('torch', x) == 'torch'  # an explicit impl wins over the variable
    monkeypatch.setenv(dispatch.ENV_VAR, 'torch')
    assert dispatch.resolve_impl('auto', x) == 'triton'  # read once per process
    set_env_impl(monkeypatch, 'cuda')
    with pytest.raises(ValueError, match=dispatch.ENV_VAR):
        dispatch.resolve_impl('auto', x)


@pytest.mark.parametrize('kwargs, name', [
    (dict(impl='cuda'), 'impl'),
    (dict(input=torch.randn(3, 8, 8)), 'input'),
    (dict(weight=torch.randn(4, 1, 3, 3)), 'weight'),
    (dict(weight=torch.randn(3, 1, 3, 5)), 'kernel'),
    (dict(weight=torch.randn(3, 1, 4, 4)), 'kernel'),
    (dict(bias=torch.randn(4)), 'bias'),
])
def test_bad_args_raise(kwargs, name):
    args = dict(input=torch.randn(1, 3, 8, 8), weight=torch.randn(3, 1, 3, 3), bias=None, impl='torch')
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        depthwise_conv2d(**args)


def test_module_rejects_bad_impl():
    with pytest.raises(ValueError, match='impl'):
        DepthwiseConv2d(4, 5, impl='fast')


def test_only_calls_that_will_get_gradients_ask_for_their_kernels(monkeypatch):
    """``backward`` (compile the gradients' kernels with the forward's) only where autograd will need them:
    not under no_grad, not for tensors that need no gradient."""
    from replk_mm.ops import triton_dwconv
    asked = []
    monkeypatch.setattr(triton_dwconv, 'supports', lambda input, kernel_size, weight_device=None: True)
    monkeypatch.setattr(triton_dwconv, 'launch_conv', lambda x, w, bias, flip, backward=False: asked.append(
        backward) or torch.zeros_like(x))
    x, w = torch.randn(1, 2, 6, 6), torch.randn(2, 1, 3, 3, requires_grad=True)
    with torch.no_grad():
        assert not depthwise_conv2d(x, w, impl='triton').requires_grad
    assert not depthwise_conv2d(x, w.detach(), impl='triton').requires_grad
    assert depthwise_conv2d(x, w, impl='triton').requires_grad
    assert asked == [False, False, True]
