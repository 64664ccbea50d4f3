"""Depthwise conv: the Triton kernels against float64, and the PyTorch fallback and dispatch.

The kernels run on the CPU in Triton's interpreter. ``triton.jit`` decides whether to interpret
when the kernels are defined, that is when ``replk_mm.ops.triton_dwconv`` is first imported, and
other tests of this process may have imported it already. So ``test_triton_kernels_in_interpreter``
runs the ``test_interpreted_*`` cases in a fresh pytest process with ``TRITON_INTERPRET=1``; in a
process started with that variable they run directly.
"""
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

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


def _rel_err(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


def _check_against_float64(x, weight, bias, tol):
    """Forward and every gradient of the Triton path against F.conv2d in float64 on the same values."""
    x = x.detach().requires_grad_()
    weight = weight.detach().requires_grad_()
    bias = None if bias is None else bias.detach().requires_grad_()
    out = depthwise_conv2d(x, weight, bias, impl='triton')
    grad_out = torch.randn(out.shape).to(out.dtype)
    out.backward(grad_out)

    ref_inputs = [t.detach().double().requires_grad_() for t in (x, weight) + ((bias, ) if bias is not None else ())]
    ref = F.conv2d(*ref_inputs, padding=weight.shape[-1] // 2, groups=x.shape[1])
    ref.backward(grad_out.double())

    assert out.dtype == x.dtype and out.shape == ref.shape
    assert x.grad.dtype == x.dtype and weight.grad.dtype == weight.dtype
    pairs = [('output', out, ref), ('grad_input', x.grad, ref_inputs[0].grad),
             ('grad_weight', weight.grad, ref_inputs[1].grad)]
    if bias is not None:
        assert bias.grad.dtype == bias.dtype
        pairs.append(('grad_bias', bias.grad, ref_inputs[2].grad))
    for name, got, want in pairs:
        err = _rel_err(got, want)
        assert err < tol, f'{name}: relative error {err:.2e} >= {tol:g}'


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
    cfg = triton_dwconv.conv_config(N, H, W, K, x.element_size())
    assert cfg['kernel'] == path.split('-')[0] and (cfg.get('COL_OFF', 0) > 0) == path.endswith('halo')
    assert triton_dwconv.supports(x, weight)
    # The weight stays float32 (as under autocast); the kernels cast it to the input dtype.
    _check_against_float64(x, weight, b, TOL[dtype])


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
    ref = F.conv2d(x.detach().double(), conv.weight.detach().double(), conv.bias.detach().double(), padding=3, groups=4)
    assert _rel_err(out, ref) < 1e-2


def test_interpreted_dispatch(monkeypatch):
    """impl='triton' reaches the kernels on the CPU here; 'auto' keeps CPU tensors on PyTorch."""
    _needs_interpreter()
    from replk_mm.ops import triton_dwconv
    calls = []
    kernels = triton_dwconv.depthwise_conv2d_triton
    monkeypatch.setattr(triton_dwconv, 'depthwise_conv2d_triton', lambda *args: calls.append(1) or kernels(*args))
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    x, weight = torch.randn(1, 2, 6, 6), torch.randn(2, 1, 3, 3)
    want = F.conv2d(x, weight, padding=1, groups=2)
    torch.testing.assert_close(depthwise_conv2d(x, weight, impl='triton'), want, rtol=1e-4, atol=1e-5)
    assert len(calls) == 1
    torch.testing.assert_close(depthwise_conv2d(x, weight), want)
    assert len(calls) == 1


def test_triton_kernels_in_interpreter():
    pytest.importorskip('triton')
    if INTERPRET:
        pytest.skip('this process interprets already: the cases run directly')
    env = dict(os.environ, TRITON_INTERPRET='1')
    env.pop(dispatch.ENV_VAR, None)
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-k', 'interpreted', str(Path(__file__))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert 'skipped' not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]


@pytest.mark.parametrize('bias', [False, True])
def test_torch_impl_is_conv2d(bias):
    torch.manual_seed(1)
    x, weight = torch.randn(2, 6, 11, 9), torch.randn(6, 1, 5, 5)
    b = torch.randn(6) if bias else None
    want = F.conv2d(x, weight, b, padding=2, groups=6)
    torch.testing.assert_close(depthwise_conv2d(x, weight, b, impl='torch'), want, rtol=0, atol=0)
    x_cl = x.to(memory_format=torch.channels_last)
    torch.testing.assert_close(depthwise_conv2d(x_cl, weight, b, impl='torch'), want)


def test_auto_falls_back_to_torch_on_cpu(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    x, weight = torch.randn(1, 3, 8, 8), torch.randn(3, 1, 3, 3)
    if not INTERPRET:
        assert dispatch.resolve_impl('auto', x) == 'torch'
    torch.testing.assert_close(depthwise_conv2d(x, weight), F.conv2d(x, weight, padding=1, groups=3))


def test_env_var_forces_impl(monkeypatch):
    x = torch.randn(1, 3, 8, 8)
    monkeypatch.setenv(dispatch.ENV_VAR, 'torch')
    assert dispatch.resolve_impl('auto', x) == 'torch'
    monkeypatch.setenv(dispatch.ENV_VAR, 'triton')
    assert dispatch.resolve_impl('auto', x) == 'triton'
    assert dispatch.resolve_impl('torch', x) == 'torch'  # an explicit impl wins over the variable
    monkeypatch.setenv(dispatch.ENV_VAR, 'cuda')
    with pytest.raises(ValueError, match=dispatch.ENV_VAR):
        dispatch.resolve_impl('auto', x)


def test_forced_triton_without_kernels_falls_back(monkeypatch):
    """impl='triton' where the kernels cannot run (no interpreter, CPU tensors) still computes the conv."""
    if INTERPRET:
        pytest.skip('the kernels can run here')
    x, weight = torch.randn(1, 3, 8, 8), torch.randn(3, 1, 5, 5)
    monkeypatch.setenv(dispatch.ENV_VAR, 'triton')
    torch.testing.assert_close(depthwise_conv2d(x, weight), F.conv2d(x, weight, padding=2, groups=3))


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
