"""Depthwise KxK convolution (stride 1, 'same' padding) behind one function and one torch op.

``impl='torch'`` is PyTorch's own ``conv2d``; ``impl='triton'`` calls the op
``torch.ops.replk_mm.depthwise_conv2d``, whose CUDA implementation runs the Triton kernels of
``triton_dwconv`` (also on the CPU under ``TRITON_INTERPRET=1``) and whose implementation elsewhere,
or for calls the kernels do not cover, is PyTorch's conv; ``impl='auto'`` takes the op on CUDA and
PyTorch's conv otherwise. The environment variable ``REPLK_DWCONV_IMPL`` overrides ``'auto'`` for
the whole process: it is read on the first ``'auto'`` call (:func:`impl_from_env`).

The op is a real torch.library op with a registered autograd formula and fake-tensor (meta)
implementations, so ``torch.compile`` traces it as one node, with no graph break, and CUDA graphs
capture it. Its backward is built from two ops too: the input gradient is the same op with the
kernel turned 180 degrees, the weight gradient ``replk_mm::depthwise_conv2d_weight_grad``. Eager
calls take the same formula and implementations through a plain ``autograd.Function``, which saves
the dispatcher's Python round trips, and lets the kernels read the weight turned (no flip launch).
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import triton_dwconv

IMPLS = ('auto', 'triton', 'torch')
ENV_VAR = 'REPLK_DWCONV_IMPL'
OP_NAMESPACE = 'replk_mm'


def _check_args(input, weight, bias, impl):
    """One test of the shapes every call makes; the messages only where it fails."""
    shape, weight_shape = input.shape, weight.shape
    if (impl in IMPLS and len(shape) == 4 and len(weight_shape) == 4 and weight_shape[0] == shape[1]
            and weight_shape[1] == 1 and weight_shape[2] == weight_shape[3] and weight_shape[2] % 2
            and (bias is None or bias.shape == shape[1:2])):
        return
    if impl not in IMPLS:
        raise ValueError(f'depthwise_conv2d: impl must be one of {IMPLS}, got {impl!r}')
    if len(shape) != 4:
        raise ValueError(f'depthwise_conv2d: input must be NCHW (4-D), got shape {tuple(shape)}')
    channels = shape[1]
    if len(weight_shape) != 4 or weight_shape[0] != channels or weight_shape[1] != 1:
        raise ValueError(f'depthwise_conv2d: weight must have shape ({channels}, 1, K, K) for '
                         f'{channels} input channels, got {tuple(weight_shape)}')
    kernel_h, kernel_w = weight_shape[-2:]
    if kernel_h != kernel_w or kernel_h % 2 == 0:
        raise ValueError(f'depthwise_conv2d: kernel must be square with an odd size, got {kernel_h}x{kernel_w}')
    raise ValueError(f'depthwise_conv2d: bias must have shape ({channels},), got {tuple(bias.shape)}')


_env_impl = None  # REPLK_DWCONV_IMPL once read: setting None again makes the next 'auto' call re-read it


def impl_from_env():
    """``REPLK_DWCONV_IMPL`` (default 'auto'), read on the first call of the process."""
    global _env_impl
    if _env_impl is None:
        impl = os.environ.get(ENV_VAR, 'auto')
        if impl not in IMPLS:
            raise ValueError(f'{ENV_VAR} must be one of {IMPLS}, got {impl!r}')
        _env_impl = impl
    return _env_impl


def resolve_impl(impl, input):
    """The implementation a call will use: 'triton' (the op) or 'torch'."""
    if impl == 'auto':
        impl = impl_from_env()
    if impl == 'auto':
        return 'triton' if input.is_cuda and triton_dwconv.available() else 'torch'
    return impl


def depthwise_conv2d(input, weight, bias=None, impl='auto'):
    """Depthwise conv with an odd KxK kernel, stride 1 and padding K//2.

    Args:
        input (Tensor): (N, C, H, W); channels_last memory format is accepted.
        weight (Tensor): (C, 1, K, K); may differ from the input's float dtype (autocast).
        bias (Tensor, optional): (C,).
        impl (str): 'auto', 'triton' or 'torch'.
    """
    _check_args(input, weight, bias, impl)
    if resolve_impl(impl, input) == 'triton':
        if torch.compiler.is_compiling():
            return torch.ops.replk_mm.depthwise_conv2d(input, weight, bias)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (input, weight, bias)):
            return _EagerDepthwiseConv2d.apply(input, weight, bias)
        return _conv_kernels_or_torch(input, weight, bias)  # no gradient will be asked for: no autograd node
    return F.conv2d(input, weight, bias, padding=weight.shape[-1] // 2, groups=input.shape[1])


def precompile_kernels(module, input, input_dtype, backward):
    """Compile the Triton kernels that ``module``'s :class:`DepthwiseConv2d` layers will launch for ``input``
    (its device; inputs of ``input_dtype``; with ``backward``, their gradients' too) in one batch, instead of
    one batch, and one start of compile workers, per kernel size at each size's first call. Does nothing where
    the layers would not use the kernels, or once the kernels are compiled.
    """
    if torch.compiler.is_compiling():
        return
    convs = {(layer.kernel_size[0], None if layer.bias is None else layer.bias.dtype)
             for layer in module.modules()
             if isinstance(layer, DepthwiseConv2d) and resolve_impl(layer.impl, input) == 'triton'}
    if convs:
        triton_dwconv.precompile_convs(convs, input_dtype, input.device, backward)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameter names) whose forward goes through :func:`depthwise_conv2d`."""

    def __init__(self, channels, kernel_size, bias=False, impl='auto'):
        if impl not in IMPLS:
            raise ValueError(f'DepthwiseConv2d: impl must be one of {IMPLS}, got {impl!r}')
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=bias)
        self.impl = impl

    def forward(self, x):
        return depthwise_conv2d(x, self.weight, self.bias, impl=self.impl)


# The op. Outputs are contiguous NCHW in the input's dtype whichever implementation runs, so the
# fake implementation can tell their layout without knowing the device's kernels.

_LIB = torch.library.Library(OP_NAMESPACE, 'DEF')
_LIB.define('depthwise_conv2d(Tensor input, Tensor weight, Tensor? bias) -> Tensor')
_LIB.define('depthwise_conv2d_weight_grad(Tensor input, Tensor grad_output, int kernel_size) -> Tensor')


def _conv_kernels_or_torch(input, weight, bias, flip=False, backward=False):
    """The op's implementation; eager calls only: ``flip`` turns the kernel 180 degrees, ``backward`` says
    that gradients will follow."""
    x = input.contiguous()
    kernel_size = weight.shape[-1]
    if triton_dwconv.supports(x, kernel_size, weight.device):  # launch_conv casts the weight, the kernels read the bias
        return triton_dwconv.launch_conv(x, weight.contiguous(), None if bias is None else bias.contiguous(), flip,
                                         backward=backward)
    w = (weight.flip((-2, -1)) if flip else weight).to(x.dtype)
    b = None if bias is None else bias.to(x.dtype)
    return F.conv2d(x, w, b, padding=kernel_size // 2, groups=x.shape[1]).contiguous()


def _weight_grad_kernels_or_torch(input, grad_output, kernel_size):
    """float32 (C, 1, K, K), whatever the input's dtype: the autograd formula casts it to the weight's."""
    x = input.contiguous()
    gy = _as_dtype(grad_output, x.dtype).contiguous()
    channels = x.shape[1]
    if triton_dwconv.supports(x, kernel_size):
        return triton_dwconv.launch_weight_grad(x, gy, kernel_size)
    return torch.nn.grad.conv2d_weight(x.float(), (channels, 1, kernel_size, kernel_size), gy.float(),
                                       padding=kernel_size // 2, groups=channels)


# One implementation for every device: the Triton kernels where they run, PyTorch's conv elsewhere.
_LIB.impl('depthwise_conv2d', _conv_kernels_or_torch, 'CompositeExplicitAutograd')
_LIB.impl('depthwise_conv2d_weight_grad', _weight_grad_kernels_or_torch, 'CompositeExplicitAutograd')


@torch.library.register_fake(f'{OP_NAMESPACE}::depthwise_conv2d', lib=_LIB)
def _conv_fake(input, weight, bias):
    return torch.empty(input.shape, dtype=input.dtype, device=input.device)


@torch.library.register_fake(f'{OP_NAMESPACE}::depthwise_conv2d_weight_grad', lib=_LIB)
def _weight_grad_fake(input, grad_output, kernel_size):
    return input.new_empty((input.shape[1], 1, kernel_size, kernel_size), dtype=torch.float32)


def _save_for_backward(ctx, input, weight, weight_dtype, bias):
    """``weight`` as the backward's convs take it; ``weight_dtype`` the parameter's, that of its gradient."""
    ctx.save_for_backward(input, weight)
    ctx.weight_dtype = weight_dtype
    ctx.bias_dtype = None if bias is None else bias.dtype


def _setup_context(ctx, inputs, output):
    input, weight, bias = inputs
    _save_for_backward(ctx, input, weight, weight.dtype, bias)


def _as_dtype(tensor, dtype):
    """``tensor.to(dtype)`` without its dispatch (about 1 us of host time) where the dtype is already right."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _gradients(ctx, grad_output, flipped_conv, weight_grad):
    """The autograd formula, given the conv with the kernel turned 180 degrees (no bias) and the weight
    gradient: the ops, or their implementations."""
    input, weight = ctx.saved_tensors
    grad_output = _as_dtype(grad_output, input.dtype)
    grad_input = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_input = flipped_conv(grad_output, weight)
    if ctx.needs_input_grad[1]:
        grad_weight = _as_dtype(weight_grad(input, grad_output, weight.shape[-1]), ctx.weight_dtype)
    if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
        grad_bias = _as_dtype(grad_output.sum((0, 2, 3), dtype=torch.float32), ctx.bias_dtype)
    return grad_input, grad_weight, grad_bias


def _op_flipped_conv(input, weight):
    """The op on the flipped weight: under torch.compile the flip is traced and fused."""
    return torch.ops.replk_mm.depthwise_conv2d(input, weight.flip((-2, -1)), None)


def _kernels_flipped_conv(input, weight):
    return _conv_kernels_or_torch(input, weight, None, flip=True)


def _backward(ctx, grad_output):
    return _gradients(ctx, grad_output, _op_flipped_conv, torch.ops.replk_mm.depthwise_conv2d_weight_grad)


torch.library.register_autograd(f'{OP_NAMESPACE}::depthwise_conv2d', _backward, setup_context=_setup_context,
                                lib=_LIB)


class _EagerDepthwiseConv2d(torch.autograd.Function):
    """The op's formula and implementations called directly: what eager calls take.

    Going through the dispatcher costs three Python round trips per op call (autograd wrapper,
    device kernel, and again for each backward op), about 0.2 ms of host time per forward+backward
    on an H200 host, more than the 7x7 stage's GPU work; torch.compile traces the op instead.
    """

    @staticmethod
    def forward(ctx, input, weight, bias):
        # Cast once (float32 parameters under autocast): the input gradient's conv takes the same weight.
        weight_for_input = _as_dtype(weight, input.dtype)
        _save_for_backward(ctx, input, weight_for_input, weight.dtype, bias)
        return _conv_kernels_or_torch(input, weight_for_input, bias, backward=any(ctx.needs_input_grad[:2]))

    @staticmethod
    def backward(ctx, grad_output):
        return _gradients(ctx, grad_output, _kernels_flipped_conv, _weight_grad_kernels_or_torch)
