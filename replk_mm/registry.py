"""replk_mm's scoped registries and the thin bridge into the MM libraries' registries.

``type='replk_mm.RepLKNet'`` resolves from any scope through the scoped registries below.
Registering in mmengine's root registries also makes a plain ``type='RepLKNet'`` (or a hook name)
resolve from every child scope (mmseg, mmdet, ...) that has nothing of that name. mmpretrain ships
a ``RepLKNet`` of its own, which stays untouched unless :func:`replace_mmpretrain_replknet` is called.
"""
import importlib

from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='replk_mm', locations=['replk_mm.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='replk_mm', locations=['replk_mm.engine'])
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope='replk_mm',
                          locations=['replk_mm.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope='replk_mm', locations=['replk_mm.engine'])


def register_everywhere(registry):
    """Class decorator: register in one of our scoped registries and in its mmengine root registry."""

    def register(cls):
        registry.register_module(cls.__name__, module=cls, force=True)
        registry.parent.register_module(cls.__name__, module=cls, force=True)
        return cls

    return register


register_model = register_everywhere(MODELS)
register_hook = register_everywhere(HOOKS)
register_model_wrapper = register_everywhere(MODEL_WRAPPERS)
register_optim_wrapper_constructor = register_everywhere(OPTIM_WRAPPER_CONSTRUCTORS)


def replace_mmpretrain_replknet():
    """Make mmpretrain's ``type='RepLKNet'`` build ours (for mmpretrain configs written for replk_mm).

    Only on request: mmpretrain configs written for its own class (``strides``, ``ffn_ratio``, ``act_cfg``)
    would fail with ours. ``type='replk_mm.RepLKNet'`` works from mmpretrain's scope without this.
    """
    from replk_mm.models import RepLKNet
    registry = importlib.import_module('mmpretrain.registry')
    importlib.import_module('mmpretrain.models')  # registers mmpretrain's own first, so ours replaces it
    registry.MODELS.register_module('RepLKNet', module=RepLKNet, force=True)
