"""Load released RepLKNet weights into the backbone, whatever their wrapping or form.

Accepted without a conversion step: the official PyTorch files (flat, or under ``model`` /
``state_dict``), mmpretrain-converted files (``backbone.`` prefix, ``head.fc``), mmengine
checkpoints of a whole segmentor/detector, ImageNet-22K files, in training or deploy form.
"""
import re

import torch
import torch.nn.functional as F
from mmengine.logging import print_log

from replk_mm.safe_load import safe_load

CLASSIFIER_KEY = re.compile(r'^(norm|head)\.')
LARGE_KERNEL = re.compile(r'^(?P<prefix>.*\.large_kernel)\.lkb_origin\.conv\.weight$')


def unwrap_state_dict(checkpoint):
    """The tensor dict inside a checkpoint (flat, or under 'state_dict' / 'model')."""
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def extract_backbone_state_dict(checkpoint):
    """Backbone weights in the official naming, and {ignored key: reason}."""
    state = unwrap_state_dict(checkpoint)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError('checkpoint holds no state dict of tensors (looked at the top level, '
                         "'state_dict' and 'model')")
    ignored = {}
    if any(k.startswith('backbone.') for k in state):
        backbone = {}
        for key, value in state.items():
            if key.startswith('backbone.'):
                backbone[key[len('backbone.'):]] = value
            else:
                ignored[key] = 'not part of the backbone (a head or neck)'
        return backbone, ignored
    backbone = {}
    for key, value in state.items():
        if CLASSIFIER_KEY.match(key):
            ignored[key] = 'ImageNet classifier (norm/head)'
        else:
            backbone[key] = value
    return backbone, ignored


def is_deploy_form(state):
    return any('.lkb_reparam.' in k for k in state)


def merge_large_kernels(state):
    """Training-form large-kernel branches (conv+BN, optional small conv+BN) -> one conv with bias.

    Pure tensor arithmetic on a state dict: the same folding as ``switch_to_deploy`` (BN eps 1e-5).
    """
    merged = dict(state)
    for key in list(state):
        match = LARGE_KERNEL.match(key)
        if not match:
            continue
        prefix = match['prefix']
        kernel, bias = _fold_bn(merged, f'{prefix}.lkb_origin')
        if f'{prefix}.small_conv.conv.weight' in merged:
            small, small_bias = _fold_bn(merged, f'{prefix}.small_conv')
            pad = (kernel.shape[-1] - small.shape[-1]) // 2
            kernel, bias = kernel + F.pad(small, [pad] * 4), bias + small_bias
        merged[f'{prefix}.lkb_reparam.weight'] = kernel
        merged[f'{prefix}.lkb_reparam.bias'] = bias
    return merged


def _fold_bn(state, branch, eps=1e-5):
    """Pop ``branch.conv`` and ``branch.bn`` from ``state``; return the BN-folded kernel and bias."""
    kernel = state.pop(f'{branch}.conv.weight')
    bn = {name: state.pop(f'{branch}.bn.{name}') for name in
          ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked') if f'{branch}.bn.{name}' in state}
    scale = bn['weight'] / (bn['running_var'] + eps).sqrt()
    return kernel * scale.reshape(-1, 1, 1, 1), bn['bias'] - bn['running_mean'] * scale


def describe_arch(state):
    """A readable arch name for a backbone state dict: '31B', '31L', 'XL' or its channel widths."""
    from .replknet import ARCH_SETTINGS
    widths = [state[f'transitions.{i}.0.conv.weight'].shape[1] for i in range(3)
              if f'transitions.{i}.0.conv.weight' in state]
    if 'transitions.2.0.conv.weight' in state:
        widths.append(state['transitions.2.0.conv.weight'].shape[0])
    for name, arch in ARCH_SETTINGS.items():
        if widths == arch['channels']:
            return name
    return f'custom (channels {widths})'


def load_pretrained(backbone, path):
    """Load ``path`` into ``backbone`` (a RepLKNet); log what was ignored and why."""
    import os
    if '://' not in path and not os.path.isfile(path):
        raise FileNotFoundError(
            f'RepLKNet pretrained checkpoint not found: {path}. Put the released ImageNet file there, '
            'or train from scratch with --cfg-options model.backbone.init_cfg=None')
    state, ignored = extract_backbone_state_dict(safe_load(path))
    model_state = backbone.state_dict()
    model_deploy = is_deploy_form(model_state)
    if is_deploy_form(state) and not model_deploy:
        print_log(f'{path} is in deploy form (merged large kernels): switching the backbone\'s large-kernel '
                  'convs to deploy form to load it (build with small_kernel_merged=True to do so directly)',
                  logger='current')
        backbone.switch_to_deploy()
        model_state = backbone.state_dict()
    elif model_deploy and not is_deploy_form(state):
        state = merge_large_kernels(state)
    for key in list(state):
        if key not in model_state:
            ignored[key] = 'no such parameter in this backbone'
            del state[key]
    for key, value in state.items():
        if value.shape != model_state[key].shape:
            raise ValueError(
                f'{path} holds RepLKNet arch {describe_arch(state)}, but the backbone is arch '
                f'{describe_arch(model_state)}: first mismatch at {key}: checkpoint {tuple(value.shape)} vs '
                f'model {tuple(model_state[key].shape)}')
    missing = [k for k in model_state if k not in state]
    backbone.load_state_dict(state, strict=False)
    print_log(f'loaded {len(state)} tensors into RepLKNet from {path}', logger='current')
    for key, reason in ignored.items():
        print_log(f'ignored {key}: {reason}', logger='current')
    if missing:
        print_log(f'not in the checkpoint, left as initialised: {missing}', logger='current')
    return dict(loaded=sorted(state), ignored=ignored, missing=missing)
