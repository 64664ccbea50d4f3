"""RepLKNet: large depthwise kernels (up to 31x31) with structural re-parameterisation.

"Scaling Up Your Kernels to 31x31: Revisiting Large Kernel Design in CNNs", Ding et al., CVPR 2022.
Module and parameter names follow the official release, so its ImageNet state dicts load strictly.
The blocks depend on torch only; :class:`RepLKNet` is an mmengine ``BaseModule`` for ``init_cfg``.
"""
import copy

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from replk_mm.ops import DepthwiseConv2d, precompile_kernels
from replk_mm.registry import register_model

from ..cuda_graph import GraphedTraining
from ..reparam import add_centred_kernel, fold_bn

__all__ = ['RepLKNet', 'ARCH_SETTINGS', 'ARCH_KEYS']

ARCH_SETTINGS = {
    '31B': dict(large_kernel_sizes=[31, 29, 27, 13], layers=[2, 2, 18, 2],
                channels=[128, 256, 512, 1024], small_kernel=5, dw_ratio=1),
    '31L': dict(large_kernel_sizes=[31, 29, 27, 13], layers=[2, 2, 18, 2],
                channels=[192, 384, 768, 1536], small_kernel=5, dw_ratio=1),
    'XL': dict(large_kernel_sizes=[27, 27, 27, 13], layers=[2, 2, 18, 2],
               channels=[256, 512, 1024, 2048], small_kernel=None, dw_ratio=1.5),
}
ARCH_KEYS = ('large_kernel_sizes', 'layers', 'channels', 'small_kernel', 'dw_ratio')
FFN_RATIO = 4
BATCH_NORMS = ('BN', 'BN2d', 'SyncBN', 'SyncBatchNormWithoutHostSync')  # re-parameterisation folds BNs


def norm_layer_factory(norm_cfg):
    """``channels -> BN module`` from an MM ``norm_cfg`` (mmcv's builder: BN, SyncBN, requires_grad, ...)."""
    if not isinstance(norm_cfg, dict) or norm_cfg.get('type') not in BATCH_NORMS:
        raise ValueError(f'norm_cfg: expected a dict with type one of {BATCH_NORMS}, got {norm_cfg!r}')
    return lambda channels: build_norm_layer(norm_cfg, channels)[1]


class PointwiseConv2d(nn.Conv2d):
    """1x1 conv (no bias) computed as a batched matrix product on NCHW maps.

    cuDNN spends about a millisecond of host time on every input shape it has not seen, for each pass
    of each conv (its heuristics and execution plan). Multi-scale detection training meets a new shape
    at nearly every step and RepLKNet-31B has 100 1x1 convs; cuBLAS needs no per-shape set-up. The
    parameter stays the conv's (out, in, 1, 1), so checkpoints and initialisation are unchanged, and
    tracers and exporters (FLOP counting, ONNX) see a conv.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels, 1, bias=False)

    def forward(self, x):
        if torch.jit.is_tracing() or torch.compiler.is_exporting() or not x.is_contiguous():
            return super().forward(x)
        n, _, h, w = x.shape
        weight = self.weight.flatten(1).expand(n, -1, -1)
        return torch.bmm(weight, x.view(n, self.in_channels, h * w)).view(n, self.out_channels, h, w)


class ConvBN(nn.Sequential):
    """Conv (no bias) + norm, optionally + ReLU; children named ``conv``/``bn`` as released."""

    def __init__(self, in_channels, out_channels, kernel_size, norm_layer, stride=1, groups=1,
                 relu=False):
        super().__init__()
        if kernel_size == 1 and stride == 1 and groups == 1:
            conv = PointwiseConv2d(in_channels, out_channels)
        else:
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                             groups=groups, bias=False)
        self.add_module('conv', conv)
        self.add_module('bn', norm_layer(out_channels))
        if relu:
            self.add_module('nonlinear', nn.ReLU())


class DWConvBN(nn.Sequential):
    """Depthwise KxK conv (through ``replk_mm.ops``) + norm: one branch of the large kernel."""

    def __init__(self, channels, kernel_size, norm_layer, dwconv_impl):
        super().__init__()
        self.add_module('conv', DepthwiseConv2d(channels, kernel_size, impl=dwconv_impl))
        self.add_module('bn', norm_layer(channels))

    def folded(self):
        """(kernel, bias) of the one conv this branch equals in eval mode."""
        bn = self.bn
        return fold_bn(self.conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)


class ReparamLargeKernelConv(nn.Module):
    """Depthwise KxK conv + BN, plus a parallel small-kernel conv + BN, mergeable into one KxK conv.

    Training form: ``lkb_origin`` (+ ``small_conv``). Deploy form: ``lkb_reparam`` with bias.
    """

    def __init__(self, channels, kernel_size, small_kernel, norm_layer, small_kernel_merged=False,
                 dwconv_impl='auto'):
        super().__init__()
        if small_kernel is not None and small_kernel > kernel_size:
            raise ValueError(f'small_kernel ({small_kernel}) must not exceed the large kernel ({kernel_size})')
        self.kernel_size = kernel_size
        self.small_kernel = small_kernel
        if small_kernel_merged:
            self.lkb_reparam = DepthwiseConv2d(channels, kernel_size, bias=True, impl=dwconv_impl)
        else:
            self.lkb_origin = DWConvBN(channels, kernel_size, norm_layer, dwconv_impl)
            if small_kernel is not None:
                self.small_conv = DWConvBN(channels, small_kernel, norm_layer, dwconv_impl)

    def forward(self, x):
        if hasattr(self, 'lkb_reparam'):
            return self.lkb_reparam(x)
        out = self.lkb_origin(x)
        if hasattr(self, 'small_conv'):
            out = out + self.small_conv(x)
        return out

    @torch.no_grad()
    def merged_kernel_and_bias(self):
        """The single KxK kernel and bias equal to the training form in eval mode."""
        kernel, bias = self.lkb_origin.folded()
        if hasattr(self, 'small_conv'):
            kernel, bias = add_centred_kernel(kernel, bias, *self.small_conv.folded())
        return kernel, bias

    def switch_to_deploy(self):
        """Replace the branches by one KxK conv with bias; a no-op once merged."""
        if hasattr(self, 'lkb_reparam'):
            return
        kernel, bias = self.merged_kernel_and_bias()
        origin = self.lkb_origin.conv
        self.lkb_reparam = DepthwiseConv2d(origin.in_channels, self.kernel_size, bias=True, impl=origin.impl)
        self.lkb_reparam.to(device=kernel.device, dtype=kernel.dtype)
        self.lkb_reparam.weight.data.copy_(kernel)
        self.lkb_reparam.bias.data.copy_(bias)
        del self.lkb_origin
        if hasattr(self, 'small_conv'):
            del self.small_conv


class RepLKBlock(nn.Module):
    """BN -> 1x1 conv-BN-ReLU -> large depthwise conv -> ReLU -> 1x1 conv-BN, with a residual.

    ``norm_layer`` maps channels to a norm module and ``drop_path`` is the residual branch's stochastic
    depth module: the backbone supplies both, so the blocks need nothing but torch.
    """

    def __init__(self, channels, dw_channels, kernel_size, small_kernel, norm_layer, drop_path,
                 small_kernel_merged=False, dwconv_impl='auto'):
        super().__init__()
        # Declaration order matches the released checkpoints' key order.
        self.pw1 = ConvBN(channels, dw_channels, 1, norm_layer, relu=True)
        self.pw2 = ConvBN(dw_channels, channels, 1, norm_layer)
        self.large_kernel = ReparamLargeKernelConv(
            dw_channels, kernel_size, small_kernel, norm_layer, small_kernel_merged=small_kernel_merged,
            dwconv_impl=dwconv_impl)
        self.lk_nonlinear = nn.ReLU()
        self.prelkb_bn = norm_layer(channels)
        self.drop_path = drop_path

    def forward(self, x):
        out = self.pw1(self.prelkb_bn(x))
        out = self.pw2(self.lk_nonlinear(self.large_kernel(out)))
        return x + self.drop_path(out)


class ConvFFN(nn.Module):
    """BN -> 1x1 conv-BN (C -> 4C) -> GELU -> 1x1 conv-BN (4C -> C), with a residual."""

    def __init__(self, channels, hidden_channels, norm_layer, drop_path):
        super().__init__()
        self.drop_path = drop_path
        self.preffn_bn = norm_layer(channels)
        self.pw1 = ConvBN(channels, hidden_channels, 1, norm_layer)
        self.pw2 = ConvBN(hidden_channels, channels, 1, norm_layer)
        self.nonlinear = nn.GELU()

    def forward(self, x):
        out = self.pw2(self.nonlinear(self.pw1(self.preffn_bn(x))))
        return x + self.drop_path(out)


class RepLKNetStage(nn.Module):
    """One (RepLKBlock, ConvFFN) pair per entry of ``drop_path_rates``, then an optional output norm.

    ``drop_path_layer`` maps a rate to a stochastic depth module.
    """

    def __init__(self, channels, kernel_size, small_kernel, dw_ratio, drop_path_rates, norm_layer,
                 drop_path_layer, small_kernel_merged=False, norm_intermediate_features=False, with_cp=False,
                 dwconv_impl='auto'):
        super().__init__()
        self.with_cp = with_cp
        blocks = []
        for rate in drop_path_rates:
            blocks.append(RepLKBlock(
                channels, int(channels * dw_ratio), kernel_size, small_kernel, norm_layer, drop_path_layer(rate),
                small_kernel_merged=small_kernel_merged, dwconv_impl=dwconv_impl))
            blocks.append(ConvFFN(channels, channels * FFN_RATIO, norm_layer, drop_path_layer(rate)))
        self.blocks = nn.ModuleList(blocks)
        self.norm = norm_layer(channels) if norm_intermediate_features else nn.Identity()

    def forward(self, x):
        for block in self.blocks:
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def resolve_arch(arch):
    """An arch name or dict -> a validated copy of the arch dict."""
    if isinstance(arch, str):
        if arch not in ARCH_SETTINGS:
            raise ValueError(f'arch: unknown RepLKNet arch {arch!r}; valid names are {sorted(ARCH_SETTINGS)} '
                             f'or a dict with keys {ARCH_KEYS}')
        return copy.deepcopy(ARCH_SETTINGS[arch])
    if not isinstance(arch, dict):
        raise TypeError(f'arch: expected one of {sorted(ARCH_SETTINGS)} or a dict, got {type(arch).__name__}')
    missing = [key for key in ARCH_KEYS if key not in arch]
    if missing:
        raise ValueError(f'arch: the dict is missing keys {missing}; it needs all of {ARCH_KEYS}')
    unknown = sorted(set(arch) - set(ARCH_KEYS))
    if unknown:
        raise ValueError(f'arch: unknown keys {unknown}; valid keys are {ARCH_KEYS}')
    arch = copy.deepcopy(dict(arch))
    for key in ('large_kernel_sizes', 'layers', 'channels'):
        if len(arch[key]) != 4:
            raise ValueError(f'arch: {key} must have 4 entries (one per stage), got {arch[key]}')
    if any(k % 2 == 0 for k in arch['large_kernel_sizes']):
        raise ValueError(f"arch: large_kernel_sizes must be odd, got {arch['large_kernel_sizes']}")
    return arch


@register_model
class RepLKNet(BaseModule):
    """RepLKNet backbone for dense prediction: feature maps at strides 4, 8, 16 and 32.

    Args:
        arch (str | dict): '31B', '31L', 'XL', or a dict with keys ``large_kernel_sizes``, ``layers``,
            ``channels``, ``small_kernel`` (None: no small branch) and ``dw_ratio``.
        in_channels (int): Input image channels.
        out_indices (Sequence[int]): Stages (0-3) whose outputs are returned.
        drop_path_rate (float): Stochastic depth at the last block, linearly from 0.
        small_kernel_merged (bool): Build the large-kernel convs directly in deploy form.
        norm_intermediate_features (bool): A BN on each returned stage output (``stages.i.norm``).
        with_cp (bool): Gradient checkpointing of every block (less memory, more compute).
        frozen_stages (int): -1 freezes nothing, 0 the stem, k in 1..3 the stem and stages 0..k-1
            with the transitions between them; frozen parts stay in eval mode.
        norm_eval (bool): Keep every BN in eval mode during training (frozen statistics).
        norm_cfg (dict): ``dict(type=T)`` plus BN keyword arguments, T one of ``BATCH_NORMS`` ('BN', 'SyncBN',
            'SyncBatchNormWithoutHostSync': :mod:`replk_mm.models.sync_bn`, ...).
        dwconv_impl (str): Large-kernel conv implementation: 'auto', 'triton' or 'torch'.
        cuda_graph (bool): Replay training forward and backward as CUDA graphs at the first input shape
            (fixed-size crops: UperNet), which saves the host time of launching every kernel; other
            shapes, eval mode and CPU inputs run eagerly (:class:`~replk_mm.models.cuda_graph.GraphedTraining`).
        init_cfg (dict | list[dict], optional): mmengine initialisation config.
    """

    def __init__(self, arch='31B', in_channels=3, out_indices=(0, 1, 2, 3), drop_path_rate=0.3,
                 small_kernel_merged=False, norm_intermediate_features=False, with_cp=False,
                 frozen_stages=-1, norm_eval=False, norm_cfg=dict(type='BN'), dwconv_impl='auto',
                 cuda_graph=False, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if cuda_graph and with_cp:
            raise ValueError('with_cp=True and cuda_graph=True exclude each other: checkpointing recomputes the '
                             'forward in the backward, which a captured graph cannot; turn one of them off')
        self.arch_settings = resolve_arch(arch)
        out_indices = tuple(out_indices) if isinstance(out_indices, (list, tuple)) else (out_indices, )
        if not out_indices or any(not isinstance(i, int) or not 0 <= i <= 3 for i in out_indices):
            raise ValueError(f'out_indices: each must be a stage index in 0..3, got {out_indices}')
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= 3:
            raise ValueError(f'frozen_stages: must be an int in -1..3 (-1 freezes nothing), got {frozen_stages!r}')
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate: must be in [0, 1), got {drop_path_rate}')
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        norm_layer = norm_layer_factory(norm_cfg)
        settings = self.arch_settings
        layers, channels = settings['layers'], settings['channels']
        self.channels = list(channels)
        base = channels[0]
        self.stem = nn.ModuleList([
            ConvBN(in_channels, base, 3, norm_layer, stride=2, relu=True),
            ConvBN(base, base, 3, norm_layer, groups=base, relu=True),
            ConvBN(base, base, 1, norm_layer, relu=True),
            ConvBN(base, base, 3, norm_layer, stride=2, groups=base, relu=True),
        ])
        self.with_cp = with_cp
        drop_paths = torch.linspace(0, drop_path_rate, sum(layers)).tolist()
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for i in range(4):
            start = sum(layers[:i])
            self.stages.append(RepLKNetStage(
                channels[i], settings['large_kernel_sizes'][i], settings['small_kernel'], settings['dw_ratio'],
                drop_path_rates=drop_paths[start:start + layers[i]], norm_layer=norm_layer,
                drop_path_layer=DropPath, small_kernel_merged=small_kernel_merged,
                norm_intermediate_features=norm_intermediate_features, with_cp=with_cp, dwconv_impl=dwconv_impl))
            if i < 3:
                self.transitions.append(nn.Sequential(
                    ConvBN(channels[i], channels[i + 1], 1, norm_layer, relu=True),
                    ConvBN(channels[i + 1], channels[i + 1], 3, norm_layer, stride=2,
                           groups=channels[i + 1], relu=True)))
        self._freeze_stages()
        self.cuda_graphs = GraphedTraining() if cuda_graph else None
        self._kernels_compiled_for = set()

    def forward(self, x):
        if x.is_cuda and not torch.compiler.is_compiling():
            self._compile_kernels(x)
        if self.cuda_graphs is not None:
            return self.cuda_graphs(self, self._forward, x)
        return self._forward(x)

    def _compile_kernels(self, x):
        """At the first call per input dtype and mode, compile the kernels of all the large-kernel convs in one
        batch (see :func:`~replk_mm.ops.precompile_kernels`); under autocast they see its dtype."""
        dtype = torch.get_autocast_dtype('cuda') if torch.is_autocast_enabled('cuda') else x.dtype
        backward = self.training and torch.is_grad_enabled()
        if (x.device, dtype, backward) not in self._kernels_compiled_for:
            self._kernels_compiled_for.add((x.device, dtype, backward))
            precompile_kernels(self, x, dtype, backward)

    def _forward(self, x):
        x = self.stem[0](x)
        for layer in self.stem[1:]:
            x = cp.checkpoint(layer, x, use_reentrant=False) if self.with_cp and x.requires_grad else layer(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(stage.norm(x))
            if i < 3:
                x = self.transitions[i](x)
        return tuple(outs)

    def init_weights(self):
        """``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` accepts every released RepLKNet layout."""
        init_cfg = self.init_cfg
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            from replk_mm.checkpoint import load_pretrained  # the model never needs checkpoint code to import
            load_pretrained(self, init_cfg['checkpoint'])
            self._is_init = True
            return
        super().init_weights()

    def _frozen_modules(self):
        if self.frozen_stages >= 0:
            yield self.stem
        for i in range(self.frozen_stages):
            yield self.stages[i]
            if i > 0:
                yield self.transitions[i - 1]

    def _freeze_stages(self):
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def switch_to_deploy(self):
        """Merge every large-kernel branch into one KxK conv (eval-mode equivalent); idempotent."""
        if self.cuda_graphs is not None:
            self.cuda_graphs.clear()
        for module in self.modules():
            if isinstance(module, ReparamLargeKernelConv):
                module.switch_to_deploy()
