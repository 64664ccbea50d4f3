"""Released RepLKNet checkpoint layouts: what is inside a file and which form and arch it holds.

The official PyTorch files (flat, or under ``model`` / ``state_dict``), mmpretrain-converted files
(``backbone.`` prefix, ``head.fc``, the classifier norm as ``backbone.stages.3.norm``), mmengine
checkpoints of a whole segmentor/detector and replk_mm's own converted files, ImageNet-1K or 22K, in
training or deploy form. Pure functions on state dicts; nothing here touches a model.
"""
import re
from collections import defaultdict

import torch

from replk_mm.models.backbones.replknet import ARCH_KEYS, ARCH_SETTINGS
from replk_mm.models.reparam import add_centred_kernel, fold_bn

CLASSIFIER_KEY = re.compile(r'^(norm|head)\.')
BLOCK_KEY = re.compile(r'^stages\.(?P<stage>\d+)\.blocks\.(?P<block>\d+)\.')
LARGE_KERNEL = re.compile(r'^(?P<prefix>.*\.large_kernel)\.lkb_origin\.conv\.weight$')
BN_TENSORS = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')


def unwrap_state_dict(checkpoint):
    """The tensor dict inside a checkpoint (flat, or under 'state_dict' / 'model')."""
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def extract_backbone_state_dict(checkpoint):
    """Backbone weights in the official naming, and {ignored key: reason}."""
    state = unwrap_state_dict(checkpoint)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError('checkpoint holds no state dict of tensors (looked at the top level, '
                         "'state_dict' and 'model')")
    ignored = {}
    backbone = {}
    if any(k.startswith('backbone.') for k in state):
        for key, value in state.items():
            if key.startswith('backbone.'):
                backbone[key[len('backbone.'):]] = value
            else:
                ignored[key] = 'not part of the backbone (classifier, neck or head)'
        # mmpretrain's converter renames the classifier's final 'norm' to backbone.stages.3.norm; a backbone
        # with stage norms (norm_intermediate_features) has one on every stage, so a lone stage-3 norm is it.
        if 'stages.3.norm.weight' in backbone and 'stages.0.norm.weight' not in backbone:
            for key in [k for k in backbone if k.startswith('stages.3.norm.')]:
                del backbone[key]
                ignored[f'backbone.{key}'] = ("ImageNet classifier norm (the official 'norm', which mmpretrain "
                                              'names backbone.stages.3.norm)')
        return backbone, ignored
    head = state.get('head.weight')
    reason = 'ImageNet classifier (norm and head' + (f', {head.shape[0]} classes)' if head is not None else ')')
    for key, value in state.items():
        if CLASSIFIER_KEY.match(key):
            ignored[key] = reason
        else:
            backbone[key] = value
    return backbone, ignored


def is_deploy_form(state):
    """Whether the large kernels are merged (``lkb_reparam``) in this backbone state dict."""
    return any('.lkb_reparam.' in k for k in state)


def is_training_form(state):
    """Whether the large kernels have their separate branches (``lkb_origin``) in this backbone state dict."""
    return any('.lkb_origin.' in k for k in state)


def merge_large_kernels(state, eps=1e-5):
    """Training-form large-kernel branches (conv+BN, optional small conv+BN) -> one conv with bias.

    Pure tensor arithmetic on a state dict: the same folding as ``switch_to_deploy``; ``eps`` is the
    BNs' epsilon (1e-5 in the official models).
    """
    merged = dict(state)
    for key in list(state):
        match = LARGE_KERNEL.match(key)
        if not match:
            continue
        prefix = match['prefix']
        kernel, bias = _pop_folded_branch(merged, f'{prefix}.lkb_origin', eps)
        if f'{prefix}.small_conv.conv.weight' in merged:
            kernel, bias = add_centred_kernel(kernel, bias, *_pop_folded_branch(merged, f'{prefix}.small_conv', eps))
        merged[f'{prefix}.lkb_reparam.weight'] = kernel
        merged[f'{prefix}.lkb_reparam.bias'] = bias
    return merged


def _pop_folded_branch(state, branch, eps):
    """Pop ``branch.conv`` and ``branch.bn`` from ``state``; return the BN-folded kernel and bias."""
    kernel = state.pop(f'{branch}.conv.weight')
    bn = {name: state.pop(f'{branch}.bn.{name}') for name in BN_TENSORS if f'{branch}.bn.{name}' in state}
    return fold_bn(kernel, bn['weight'], bn['bias'], bn['running_mean'], bn['running_var'], eps)


def infer_arch(state):
    """The arch settings a backbone state dict was made with, as far as its keys tell.

    ``small_kernel`` is left out for deploy-form dicts (merged away); missing keys leave an entry out.
    """
    arch = {}
    if 'stem.0.conv.weight' in state:
        channels = [state['stem.0.conv.weight'].shape[0]]
        channels += [state[f'transitions.{i}.0.conv.weight'].shape[0] for i in range(3)
                     if f'transitions.{i}.0.conv.weight' in state]
        arch['channels'] = channels
    blocks = defaultdict(set)
    for key in state:
        match = BLOCK_KEY.match(key)
        if match:
            blocks[int(match['stage'])].add(int(match['block']))
    if blocks:
        arch['layers'] = [(max(blocks[s]) + 2) // 2 if blocks[s] else 0 for s in range(max(blocks) + 1)]  # block pairs
    kernels = []
    for s in sorted(blocks):
        for name in ('lkb_origin.conv.weight', 'lkb_reparam.weight'):
            weight = state.get(f'stages.{s}.blocks.0.large_kernel.{name}')
            if weight is not None:
                kernels.append(weight.shape[-1])
    if kernels:
        arch['large_kernel_sizes'] = kernels
    if is_training_form(state):
        small = state.get('stages.0.blocks.0.large_kernel.small_conv.conv.weight')
        arch['small_kernel'] = small.shape[-1] if small is not None else None
    pw1 = state.get('stages.0.blocks.0.pw1.conv.weight')
    if pw1 is not None and 'channels' in arch:
        ratio = pw1.shape[0] / arch['channels'][0]
        arch['dw_ratio'] = int(ratio) if ratio.is_integer() else ratio
    return arch


def describe_arch(arch):
    """'31B', '31L', 'XL', or the settings themselves, for an (inferred) arch dict."""
    for name, settings in ARCH_SETTINGS.items():
        if arch and all(settings[k] == v for k, v in arch.items()):
            return name
    return 'custom (' + ', '.join(f'{k}={arch[k]}' for k in ARCH_KEYS if k in arch) + ')'


def require_replknet(path, state):
    """Raise unless the backbone state dict extracted from ``path`` holds RepLKNet weights at all."""
    if 'stem.0.conv.weight' not in state:
        raise ValueError(f'{path} holds no RepLKNet backbone weights (no stem.0.conv.weight after unwrapping); '
                         f'its first keys: {", ".join(list(state)[:5])}')
