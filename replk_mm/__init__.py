"""RepLKNet for OpenMMLab 2.x: ``import replk_mm`` makes ``type='RepLKNet'`` buildable in MM configs.

Importing registers our names (the backbone, hooks, model wrapper) and gives mmengine's autocast a version check
that torch.compile can trace (``replk_mm.engine.compile``); it does nothing else.
"""
from .checkpoint import allow_mmengine_checkpoints, safe_load
from .engine import (
                     AtomicCheckpointHook,
                     CPUCapableDistributedDataParallel,
                     FiniteLossHook,
                     RNGStateHook,
                     SegLabelRangeHook,
)
from .models import RepLKNet
from .ops import depthwise_conv2d
from .registry import HOOKS, MODELS, replace_mmpretrain_replknet

__version__ = '0.1.0'

__all__ = ['allow_mmengine_checkpoints', 'AtomicCheckpointHook', 'CPUCapableDistributedDataParallel',
           'depthwise_conv2d', 'FiniteLossHook', 'HOOKS', 'MODELS', 'RepLKNet', 'replace_mmpretrain_replknet',
           'RNGStateHook', 'safe_load', 'SegLabelRangeHook', '__version__']
