"""RepLKNet for OpenMMLab 2.x: ``import replk_mm`` makes ``type='RepLKNet'`` buildable in MM configs."""
from .models import RepLKNet
from .registry import MODELS, register_everywhere
from .safe_load import allow_mmengine_checkpoints, safe_load

__version__ = '0.1.0'

register_everywhere('RepLKNet', RepLKNet)
allow_mmengine_checkpoints()

__all__ = ['RepLKNet', 'MODELS', 'safe_load', '__version__']
