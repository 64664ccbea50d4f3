"""Does this state dict fit this model? One check, used wherever a checkpoint meets a model.

mmengine loads ``load_from`` checkpoints non-strictly and only warns; the tools and the pretrained
loader refuse instead, naming the first key that differs.
"""
import re

from .formats import describe_arch, infer_arch, require_replknet

STAGE_NORM_KEY = re.compile(r'^stages\.\d+\.norm\.')


def _shape(tensor):
    return tuple(tensor.shape) if tensor is not None else 'absent'


def first_mismatch(state, model_state, skip=None):
    """``(key, checkpoint shape, model shape)`` of the first key absent on one side or of another shape,
    model keys first; None if every key matches. ``skip`` is a compiled pattern of keys allowed to differ."""
    keys = [k for k in model_state if not (skip and skip.match(k))]
    keys += [k for k in state if k not in model_state and not (skip and skip.match(k))]
    for key in keys:
        ours, theirs = model_state.get(key), state.get(key)
        if ours is None or theirs is None or ours.shape != theirs.shape:
            return key, _shape(theirs), _shape(ours)
    return None


def check_fits_model(path, state, model_state, what):
    """Raise ValueError unless ``state`` (read from ``path``) has exactly the keys and shapes of ``what``."""
    mismatch = first_mismatch(state, model_state)
    if mismatch:
        key, theirs, ours = mismatch
        raise ValueError(f'{path} does not fit the model of {what}: first mismatch at {key}: checkpoint {theirs} '
                         f'vs model {ours}')


def check_same_arch(path, state, model_state, model_arch):
    """Raise if backbone ``state`` is not the backbone's arch, naming both and the first mismatching key.

    Stage output norms may differ (a classifier has none; ``norm_intermediate_features`` adds them).
    """
    require_replknet(path, state)
    mismatch = first_mismatch(state, model_state, skip=STAGE_NORM_KEY)
    if mismatch:
        key, theirs, ours = mismatch
        raise ValueError(
            f'{path} holds RepLKNet arch {describe_arch(infer_arch(state))}, but the backbone is arch '
            f'{describe_arch(model_arch)}: first mismatch at {key}: checkpoint {theirs} vs backbone {ours}')
