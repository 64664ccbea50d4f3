"""Depthwise KxK convolution (stride 1, 'same' padding) behind one function.

``impl='torch'`` is PyTorch's own ``conv2d``; ``impl='triton'`` runs the Triton kernels in
``triton_dwconv`` (on CUDA, or on the CPU under ``TRITON_INTERPRET=1``); ``impl='auto'`` picks
Triton on CUDA when the kernels cover the call and falls back to PyTorch otherwise. The
environment variable ``REPLK_DWCONV_IMPL`` overrides ``'auto'`` for the whole process.
"""
import os

import torch.nn as nn
import torch.nn.functional as F

IMPLS = ('auto', 'triton', 'torch')
ENV_VAR = 'REPLK_DWCONV_IMPL'


def _check_args(input, weight, bias, impl):
    if impl not in IMPLS:
        raise ValueError(f'depthwise_conv2d: impl must be one of {IMPLS}, got {impl!r}')
    if input.dim() != 4:
        raise ValueError(f'depthwise_conv2d: input must be NCHW (4-D), got shape {tuple(input.shape)}')
    channels = input.shape[1]
    if weight.shape[0] != channels or weight.shape[1] != 1 or weight.dim() != 4:
        raise ValueError(f'depthwise_conv2d: weight must have shape ({channels}, 1, K, K) for '
                         f'{channels} input channels, got {tuple(weight.shape)}')
    kernel_h, kernel_w = weight.shape[-2:]
    if kernel_h != kernel_w or kernel_h % 2 == 0:
        raise ValueError(f'depthwise_conv2d: kernel must be square with an odd size, got {kernel_h}x{kernel_w}')
    if bias is not None and bias.shape != (channels, ):
        raise ValueError(f'depthwise_conv2d: bias must have shape ({channels},), got {tuple(bias.shape)}')


def resolve_impl(impl, input):
    """The implementation a call will use: 'triton' or 'torch'."""
    if impl == 'auto':
        impl = os.environ.get(ENV_VAR, 'auto')
        if impl not in IMPLS:
            raise ValueError(f'{ENV_VAR} must be one of {IMPLS}, got {impl!r}')
    if impl == 'auto':
        from . import triton_dwconv
        return 'triton' if input.is_cuda and triton_dwconv.available() else 'torch'
    return impl


def depthwise_conv2d(input, weight, bias=None, impl='auto'):
    """Depthwise conv with an odd KxK kernel, stride 1 and padding K//2.

    Args:
        input (Tensor): (N, C, H, W); channels_last memory format is accepted.
        weight (Tensor): (C, 1, K, K).
        bias (Tensor, optional): (C,).
        impl (str): 'auto', 'triton' or 'torch'.
    """
    _check_args(input, weight, bias, impl)
    if resolve_impl(impl, input) == 'triton':
        from . import triton_dwconv
        if triton_dwconv.supports(input, weight):
            return triton_dwconv.depthwise_conv2d_triton(input, weight, bias)
    padding = weight.shape[-1] // 2
    return F.conv2d(input, weight, bias, padding=padding, groups=input.shape[1])


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameter names) whose forward goes through :func:`depthwise_conv2d`."""

    def __init__(self, channels, kernel_size, bias=False, impl='auto'):
        if impl not in IMPLS:
            raise ValueError(f'DepthwiseConv2d: impl must be one of {IMPLS}, got {impl!r}')
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=bias)
        self.impl = impl

    def forward(self, x):
        return depthwise_conv2d(x, self.weight, self.bias, impl=self.impl)
