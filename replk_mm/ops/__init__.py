"""Large-kernel depthwise convolution: one public function with a pure-torch fallback."""
from .depthwise_conv import DepthwiseConv2d, depthwise_conv2d, precompile_kernels

__all__ = ['depthwise_conv2d', 'DepthwiseConv2d', 'precompile_kernels']
