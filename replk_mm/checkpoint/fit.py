"""Does this state dict fit this model? One check, used wherever a checkpoint meets a model.

mmengine loads ``load_from`` checkpoints non-strictly and only warns; the tools and the pretrained
loader refuse instead, naming the first key that differs.
"""
import re

from .formats import describe_arch, infer_arch, is_deploy_form, is_training_form, require_replknet

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
    """Raise ValueError unless ``state`` (read from ``path``) has exactly the keys and shapes of ``what``.

    A RepLKNet form mismatch (large kernels merged in one, not in the other) gets its own message: what
    the file holds, what the config builds, and how to get the pair right.
    """
    if is_training_form(state) and is_deploy_form(model_state):
        raise ValueError(f'{path} is in training form (large kernels as lkb_origin + small_conv branches), but '
                         f'{what} builds the backbone in deploy form (small_kernel_merged=True): give the training '
                         'config, or merge the checkpoint first with tools/reparameterize.py')
    if is_deploy_form(state) and is_training_form(model_state):
        raise ValueError(f'{path} is in deploy form (large kernels merged into lkb_reparam), but {what} builds the '
                         "backbone in training form: give the config tools/reparameterize.py wrote beside it, or "
                         'add --cfg-options model.backbone.small_kernel_merged=True')
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
