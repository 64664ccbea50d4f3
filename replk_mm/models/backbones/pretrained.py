"""Load released RepLKNet weights into the backbone, whatever their wrapping or form.

Accepted without a conversion step: the official PyTorch files (flat, or under ``model`` /
``state_dict``), mmpretrain-converted files (``backbone.`` prefix, ``head.fc``, the classifier norm
as ``backbone.stages.3.norm``), mmengine checkpoints of a whole segmentor/detector, replk_mm's own
converted files, ImageNet-22K files, in training or deploy form. Everything that is not loaded is
logged with the reason; a checkpoint of another arch is an error that names both archs.
"""
import os
import re
from collections import defaultdict

import torch
import torch.nn.functional as F
from mmengine.logging import print_log

from replk_mm.safe_load import safe_load

CLASSIFIER_KEY = re.compile(r'^(norm|head)\.')
STAGE_NORM_KEY = re.compile(r'^stages\.\d+\.norm\.')
BLOCK_KEY = re.compile(r'^stages\.(?P<stage>\d+)\.blocks\.(?P<block>\d+)\.')
LARGE_KERNEL = re.compile(r'^(?P<prefix>.*\.large_kernel)\.lkb_origin\.conv\.weight$')
DEPLOY_HINT = ('build the backbone in deploy form to load it: small_kernel_merged=True in its config '
               '(with the tools: --cfg-options model.backbone.small_kernel_merged=True), or load the '
               'training-form file instead')
LISTED_KEYS = 8  # keys named per reason in the log; the rest are counted


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
        kernel, bias = _fold_bn(merged, f'{prefix}.lkb_origin', eps)
        if f'{prefix}.small_conv.conv.weight' in merged:
            small, small_bias = _fold_bn(merged, f'{prefix}.small_conv', eps)
            pad = (kernel.shape[-1] - small.shape[-1]) // 2
            kernel, bias = kernel + F.pad(small, [pad] * 4), bias + small_bias
        merged[f'{prefix}.lkb_reparam.weight'] = kernel
        merged[f'{prefix}.lkb_reparam.bias'] = bias
    return merged


def _fold_bn(state, branch, eps):
    """Pop ``branch.conv`` and ``branch.bn`` from ``state``; return the BN-folded kernel and bias."""
    kernel = state.pop(f'{branch}.conv.weight')
    bn = {name: state.pop(f'{branch}.bn.{name}') for name in
          ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked') if f'{branch}.bn.{name}' in state}
    scale = bn['weight'] / (bn['running_var'] + eps).sqrt()
    return kernel * scale.reshape(-1, 1, 1, 1), bn['bias'] - bn['running_mean'] * scale


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
    from .replknet import ARCH_KEYS, ARCH_SETTINGS
    for name, settings in ARCH_SETTINGS.items():
        if arch and all(settings[k] == v for k, v in arch.items()):
            return name
    return 'custom (' + ', '.join(f'{k}={arch[k]}' for k in ARCH_KEYS if k in arch) + ')'


def _shape(tensor):
    return tuple(tensor.shape) if tensor is not None else 'absent'


def require_replknet(path, state):
    """Raise unless the backbone state dict extracted from ``path`` holds RepLKNet weights at all."""
    if 'stem.0.conv.weight' not in state:
        raise ValueError(f'{path} holds no RepLKNet backbone weights (no stem.0.conv.weight after unwrapping); '
                         f'its first keys: {", ".join(list(state)[:5])}')


def check_same_arch(path, state, model_state, model_arch):
    """Raise if ``state`` is not the backbone's arch, naming both and the first mismatching key.

    Stage output norms may differ (a classifier has none; ``norm_intermediate_features`` adds them).
    """
    require_replknet(path, state)
    keys = [k for k in model_state if not STAGE_NORM_KEY.match(k)]
    keys += [k for k in state if k not in model_state and not STAGE_NORM_KEY.match(k)]
    for key in keys:
        ours, theirs = model_state.get(key), state.get(key)
        if ours is None or theirs is None or ours.shape != theirs.shape:
            raise ValueError(
                f'{path} holds RepLKNet arch {describe_arch(infer_arch(state))}, but the backbone is arch '
                f'{describe_arch(model_arch)}: first mismatch at {key}: checkpoint {_shape(theirs)} vs '
                f'backbone {_shape(ours)}')


MISSING_PRETRAINED_HINT = ('put the released ImageNet file there, or train from scratch with '
                           '--cfg-options model.backbone.init_cfg=None')


def load_checkpoint_file(path):
    """A local file through :func:`safe_load`; an URL through torch.hub's cache, also with weights_only=True."""
    if '://' in path:
        return torch.hub.load_state_dict_from_url(path, map_location='cpu', weights_only=True)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'RepLKNet pretrained checkpoint not found: {path}; {MISSING_PRETRAINED_HINT}')
    return safe_load(path)


def load_pretrained(backbone, path):
    """Load ``path`` into ``backbone`` (a RepLKNet); log what was ignored and why.

    A training-form file loads into a deploy-form backbone (its branches are merged here). A deploy-form
    file into a training-form backbone is an error: a merged kernel cannot be split into its branches, and
    switching the backbone to deploy form here would leave the new kernels out of an optimizer built
    before ``init_weights`` (mmengine's Runner builds it first).
    """
    state, ignored = extract_backbone_state_dict(load_checkpoint_file(path))
    model_state = backbone.state_dict()
    if is_deploy_form(state) and not is_deploy_form(model_state):
        raise ValueError(f'{path} is in deploy form (large kernels merged into lkb_reparam) but the backbone is in '
                         f'training form (lkb_origin + small_conv branches); {DEPLOY_HINT}')
    if is_deploy_form(model_state) and is_training_form(state):
        state = merge_large_kernels(state, eps=backbone.stem[0].bn.eps)
    check_same_arch(path, state, model_state, backbone.arch_settings)
    for key in [k for k in state if k not in model_state]:
        ignored[key] = 'stage output norm; this backbone has none (norm_intermediate_features=False)'
        del state[key]
    missing = [k for k in model_state if k not in state]
    backbone.load_state_dict(state, strict=False)
    form = 'deploy' if is_deploy_form(model_state) else 'training'
    print_log(f'loaded {len(state)} tensors into RepLKNet (arch {describe_arch(backbone.arch_settings)}, '
              f'{form} form) from {path}', logger='current')
    by_reason = defaultdict(list)
    for key, reason in ignored.items():
        by_reason[reason].append(key)
    for reason, keys in by_reason.items():
        more = f' and {len(keys) - LISTED_KEYS} more' if len(keys) > LISTED_KEYS else ''
        print_log(f'ignored {len(keys)} keys of {path}: {reason}: {", ".join(keys[:LISTED_KEYS])}{more}',
                  logger='current')
    if missing:
        print_log(f'not in {path}, left as initialised: {", ".join(missing)}', logger='current')
    return dict(loaded=sorted(state), ignored=ignored, missing=missing)
