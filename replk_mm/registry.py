"""replk_mm's scoped registries and the thin bridge into the MM libraries' registries.

``type='replk_mm.RepLKNet'`` resolves from any scope through the scoped registries below.
Registering in mmengine's root registries also makes a plain ``type='RepLKNet'`` (or a hook name)
resolve from every child scope (mmseg, mmdet, ...) that has nothing of that name; mmpretrain
ships its own ``RepLKNet``, so there ours is registered explicitly over it when mmpretrain is installed.
"""
import importlib

from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='replk_mm', locations=['replk_mm.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='replk_mm', locations=['replk_mm.engine'])
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope='replk_mm',
                          locations=['replk_mm.engine'])


def register_everywhere(registry, module, name=None):
    """Register ``module`` in one of our scoped registries and in its mmengine root registry."""
    name = name or module.__name__
    registry.register_module(name, module=module, force=True)
    registry.parent.register_module(name, module=module, force=True)


def register_model_everywhere(module, name=None):
    """As :func:`register_everywhere` for a model, plus mmpretrain's scope where it is installed."""
    name = name or module.__name__
    register_everywhere(MODELS, module, name)
    try:
        mmpretrain_registry = importlib.import_module('mmpretrain.registry')
    except ImportError:
        return
    # mmpretrain registers its own RepLKNet when mmpretrain.models is imported: import it first,
    # so that ours replaces it instead of the later import raising a duplicate-name error.
    importlib.import_module('mmpretrain.models')
    mmpretrain_registry.MODELS.register_module(name, module=module, force=True)
