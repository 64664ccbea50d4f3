"""Structural re-parameterisation on tensors: one implementation for modules and state dicts alike.

A bias-free conv followed by an eval-mode BN equals one conv with bias; a small depthwise kernel
added in parallel equals the large kernel plus the small one zero-padded to the large size (both
are centred, same padding). ``ReparamLargeKernelConv.switch_to_deploy`` and the checkpoint converter
both call these, so a merged module and a merged checkpoint cannot disagree.
"""
import torch.nn.functional as F


def fold_bn(kernel, weight, bias, running_mean, running_var, eps):
    """(kernel, bias) of the conv that equals ``conv(kernel)`` followed by the eval-mode BN."""
    scale = weight / (running_var + eps).sqrt()
    return kernel * scale.reshape(-1, 1, 1, 1), bias - running_mean * scale


def add_centred_kernel(kernel, bias, small_kernel, small_bias):
    """The KxK kernel and bias equal to the sum of two parallel same-padded convs of odd sizes K >= k."""
    pad = (kernel.shape[-1] - small_kernel.shape[-1]) // 2
    return kernel + F.pad(small_kernel, [pad] * 4), bias + small_bias
