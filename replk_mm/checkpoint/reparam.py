"""Re-parameterising a whole trained segmentor or detector: merge its backbone, check nothing changed.

``switch_to_deploy`` merges RepLKNet's large-kernel branches in a built model; a trained checkpoint then
needs a config that builds the backbone merged (``small_kernel_merged=True``), because mmengine loads
``load_from`` checkpoints non-strictly and a form mismatch would silently leave random kernels.
"""
import os.path as osp

import torch

from replk_mm.numerics import relative_error

from .fit import check_fits_model
from .formats import is_deploy_form
from .io import safe_load


def switch_to_deploy(model):
    """Merge every large-kernel branch of ``model.backbone``; returns how many convs were merged."""
    backbone = getattr(model, 'backbone', None)
    if not hasattr(backbone, 'switch_to_deploy'):
        raise TypeError(f'model.backbone is {type(backbone).__name__}, which has no switch_to_deploy(): only '
                        'RepLKNet backbones can be re-parameterised')
    merged = sum(1 for name, _ in backbone.named_parameters() if name.endswith('lkb_origin.conv.weight'))
    backbone.switch_to_deploy()
    return merged


def comparable_outputs(model, inputs):
    """Tensors to compare before and after merging: a segmentor's logits; a detector's backbone+neck features.

    A detector's later outputs pass through NMS, which is discontinuous in its inputs; the heads after the
    neck are untouched by merging, so equal features mean equal detections.
    """
    outputs = model._forward(inputs) if hasattr(model, 'decode_head') else model.extract_feat(inputs)
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def reparameterize_checkpoint(model, checkpoint_path, what, shape=(256, 256)):
    """Merge the backbone of a trained (training-form) checkpoint: (deploy checkpoint dict, relative error).

    ``model`` is the checkpoint's model in training form, built from its config (``what`` names that config
    in errors). The error compares the model's outputs (:func:`comparable_outputs`) before and after merging
    on one random input of ``shape``, in eval mode, on the CPU in float32.
    """
    checkpoint = safe_load(checkpoint_path)
    state = checkpoint.get('state_dict') if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{checkpoint_path}: expected an mmengine checkpoint with a state_dict, got '
                         f'{sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__}')
    if is_deploy_form(state):
        raise ValueError(f'{checkpoint_path} is already in deploy form (its backbone has lkb_reparam weights)')
    model.eval()
    check_fits_model(checkpoint_path, state, model.state_dict(), what)
    model.load_state_dict(state, strict=True)
    inputs = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = comparable_outputs(model, inputs)
        merged = switch_to_deploy(model)
        after = comparable_outputs(model, inputs)
    error = relative_error(after, before)
    meta = dict(checkpoint.get('meta') or {})
    meta['replk_mm_deploy'] = dict(source=osp.basename(checkpoint_path), merged_convs=merged,
                                   relative_error=error, input_shape=list(shape))
    return dict(meta=meta, state_dict=model.state_dict()), error
