"""replk_mm's scoped model registry and its thin bridge into the MM libraries' registries.

``type='replk_mm.RepLKNet'`` resolves from any scope through the scoped registry below.
Registering the class in mmengine's root registry also makes a plain ``type='RepLKNet'``
resolve from every child scope (mmseg, mmdet, ...) that has no model of that name; mmpretrain
ships its own ``RepLKNet``, so there ours is registered explicitly over it when mmpretrain is installed.
"""
import importlib

from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='replk_mm', locations=['replk_mm.models'])


def register_everywhere(name, module):
    """Register ``module`` in replk_mm's scope, the root scope, and mmpretrain's scope if present."""
    MODELS.register_module(name, module=module, force=True)
    MMENGINE_MODELS.register_module(name, module=module, force=True)
    try:
        mmpretrain_registry = importlib.import_module('mmpretrain.registry')
    except ImportError:
        return
    # mmpretrain registers its own RepLKNet when mmpretrain.models is imported: import it first,
    # so that ours replaces it instead of the later import raising a duplicate-name error.
    importlib.import_module('mmpretrain.models')
    mmpretrain_registry.MODELS.register_module(name, module=module, force=True)
