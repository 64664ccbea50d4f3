"""Models from any MM config, built the same way for every tool: random weights, one process.

The config's ``default_scope`` (mmseg, mmdet, or mmpretrain for a backbone) picks the registry; the
backbone's ``init_cfg`` (usually a pretrained file that is absent here) is dropped and SyncBN becomes
BN. ``init_weights`` is not called: every layer keeps PyTorch's default initialisation, the same rule
for every architecture (mmseg/mmdet ResNets' ``init_weights`` zero the last BN of each residual branch).
"""
import copy
import importlib

import torch.nn as nn
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

from replk_mm.checkpoint import extract_backbone_state_dict, load_pretrained, safe_load
from replk_mm.models import RepLKNet

from .config import config_scope, deploy_config


def scope_models(scope):
    """The MODELS registry of ``scope`` (its models imported), with ``scope`` as the default scope."""
    init_default_scope(scope)
    importlib.import_module(f'{scope}.models')
    return importlib.import_module(f'{scope}.registry').MODELS


def build_model(cfg, deploy=False):
    """The config's whole model; ``deploy=True`` builds the backbone merged, as a deploy checkpoint needs."""
    registry = scope_models(config_scope(cfg))
    model_cfg = deploy_config(cfg).model if deploy else copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None
    return revert_sync_batchnorm(registry.build(model_cfg))


def build_backbone(cfg, checkpoint=None, scope=None):
    """``cfg.model.backbone`` alone, in eval mode without parameter gradients (for input-gradient analysis).

    ``scope`` defaults to the config's (mmseg where it has none); ``checkpoint`` is loaded if given.
    """
    registry = scope_models(scope or cfg.get('default_scope') or 'mmseg')
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    backbone_cfg['init_cfg'] = None
    if 'pretrained' in backbone_cfg:
        backbone_cfg['pretrained'] = None
    backbone = revert_sync_batchnorm(registry.build(backbone_cfg))
    if checkpoint is not None:
        load_backbone_checkpoint(backbone, checkpoint)
    backbone.eval()
    backbone.requires_grad_(False)
    return backbone


def load_backbone_checkpoint(backbone, path):
    """Backbone weights from a whole segmentor/detector checkpoint (``backbone.*``) or a backbone one.

    RepLKNet files of any released layout go through its own loader, after merging the backbone (exact
    in eval mode), so files of either form load.
    """
    if isinstance(backbone, RepLKNet):
        backbone.switch_to_deploy()
        load_pretrained(backbone, path)
        return
    state, _ = extract_backbone_state_dict(safe_load(path))
    result = backbone.load_state_dict(state, strict=False)
    if len(result.unexpected_keys) == len(state):
        raise ValueError(f'{path}: its {len(state)} backbone tensors match no parameter of '
                         f'{type(backbone).__name__} (keys such as {list(state)[:3]})')
    if result.missing_keys:
        print(f'warning: {len(result.missing_keys)} backbone tensors are not in {path} and stay randomly '
              f'initialised, e.g. {result.missing_keys[:3]}')


def num_classes(model):
    """Classes of a segmentor's decode head or a detector's (first) box head."""
    if hasattr(model, 'decode_head'):
        return model.decode_head.num_classes
    head = model.roi_head.bbox_head if hasattr(model, 'roi_head') else getattr(model, 'bbox_head', None)
    if isinstance(head, nn.ModuleList):
        head = head[0]
    if head is None or not hasattr(head, 'num_classes'):
        raise TypeError(f'{type(model).__name__}: found no decode_head, roi_head.bbox_head or bbox_head '
                        'to take num_classes from')
    return head.num_classes
