"""Load released RepLKNet weights into the backbone, whatever their wrapping or form.

Every layout of :mod:`replk_mm.checkpoint.formats` loads without a conversion step. Everything that is
not loaded is logged with the reason; a checkpoint of another arch is an error that names both archs.
"""
import os
from collections import defaultdict

import torch
from mmengine.logging import print_log

from .fit import check_same_arch
from .formats import describe_arch, extract_backbone_state_dict, is_deploy_form, is_training_form, merge_large_kernels
from .io import safe_load

DEPLOY_HINT = ('build the backbone in deploy form to load it: small_kernel_merged=True in its config '
               '(with the tools: --cfg-options model.backbone.small_kernel_merged=True), or load the '
               'training-form file instead')
LISTED_KEYS = 8  # keys named per reason in the log; the rest are counted
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
