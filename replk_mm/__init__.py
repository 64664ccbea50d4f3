"""RepLKNet for OpenMMLab 2.x: ``import replk_mm`` makes ``type='RepLKNet'`` buildable in MM configs."""
from .engine import (AtomicCheckpointHook, CPUCapableDistributedDataParallel, FiniteLossHook, RNGStateHook,
                     SegLabelRangeHook)
from .models import RepLKNet
from .registry import HOOKS, MODEL_WRAPPERS, MODELS, register_everywhere, register_model_everywhere
from .safe_load import allow_mmengine_checkpoints, safe_load

__version__ = '0.1.0'

register_model_everywhere(RepLKNet)
for _hook in (AtomicCheckpointHook, FiniteLossHook, RNGStateHook, SegLabelRangeHook):
    register_everywhere(HOOKS, _hook)
register_everywhere(MODEL_WRAPPERS, CPUCapableDistributedDataParallel)
allow_mmengine_checkpoints()

__all__ = ['RepLKNet', 'MODELS', 'HOOKS', 'safe_load', '__version__']
