"""A whole segmentor or detector in deploy form: its config, its checkpoint, and a check that nothing changed.

``switch_to_deploy`` merges RepLKNet's large-kernel branches in a built model; a trained checkpoint
then needs a config that builds the backbone merged (``small_kernel_merged=True``), because mmengine
loads ``load_from`` checkpoints non-strictly and a form mismatch would silently leave random kernels.
The model builder and synthetic data samples here are shared by the re-parameterisation, FLOPs and
benchmark tools; they follow the config's ``default_scope`` (mmseg or mmdet), nothing else.
"""
import copy
import os
import os.path as osp
import tempfile

import numpy as np
import torch
import torch.nn as nn
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope

from replk_mm.models.backbones.pretrained import is_deploy_form
from replk_mm.safe_load import safe_load

DEPLOY_CFG_OPTIONS = 'model.backbone.small_kernel_merged=True model.backbone.init_cfg=None'
SCOPES = ('mmseg', 'mmdet')


def config_scope(cfg):
    """The config's ``default_scope``: which library (mmseg or mmdet) builds its model."""
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(f'{cfg.filename}: default_scope must be one of {SCOPES}, got {scope!r}')
    return scope


def deploy_config(cfg):
    """A copy of ``cfg`` whose backbone is built merged and loads no pretrained weights."""
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.small_kernel_merged = True
    cfg.model.backbone.init_cfg = None
    return cfg


def build_model(cfg, deploy=False):
    """The config's model, random weights (no pretrained loading), SyncBN reverted for one process.

    ``deploy=True`` builds the backbone merged, as a deploy checkpoint needs it.
    """
    init_default_scope(config_scope(cfg))
    model_cfg = deploy_config(cfg).model if deploy else copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None
    return revert_sync_batchnorm(MODELS.build(model_cfg))


def switch_to_deploy(model):
    """Merge every large-kernel branch of ``model.backbone``; returns how many convs were merged."""
    backbone = getattr(model, 'backbone', None)
    if not hasattr(backbone, 'switch_to_deploy'):
        raise TypeError(f'model.backbone is {type(backbone).__name__}, which has no switch_to_deploy(): only '
                        'RepLKNet backbones can be re-parameterised')
    merged = sum(1 for name, _ in backbone.named_parameters() if name.endswith('lkb_origin.conv.weight'))
    backbone.switch_to_deploy()
    return merged


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


def synthetic_data_samples(model, scope, batch_size, shape, with_labels=False, seed=0):
    """Data samples of the right kind and meta data for ``batch_size`` inputs of ``shape`` (H, W).

    ``with_labels`` adds ground truth for ``mode='loss'``: a random label map (segmentation) or three
    boxes with box-shaped masks per image (detection).
    """
    height, width = shape
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                batch_input_shape=(height, width), scale_factor=(1.0, 1.0))
    generator = torch.Generator().manual_seed(seed)
    classes = num_classes(model) if with_labels else 0
    samples = []
    for _ in range(batch_size):
        if scope == 'mmseg':
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=meta)
            if with_labels:
                labels = torch.randint(0, classes, (1, height, width), generator=generator)
                sample.gt_sem_seg = PixelData(data=labels)
        elif scope == 'mmdet':
            from mmdet.structures import DetDataSample
            from mmdet.structures.mask import BitmapMasks
            from mmengine.structures import InstanceData
            sample = DetDataSample(metainfo=meta)
            if with_labels:
                sizes = torch.rand(3, 2, generator=generator) * 0.4 + 0.2  # 20-60% of the image side
                corners = torch.rand(3, 2, generator=generator) * (1 - sizes)
                scale = torch.tensor([width, height], dtype=torch.float32)
                boxes = torch.cat([corners * scale, (corners + sizes) * scale], dim=1)
                masks = np.zeros((3, height, width), dtype=np.uint8)
                for mask, (x1, y1, x2, y2) in zip(masks, boxes.round().int().tolist()):
                    mask[y1:y2, x1:x2] = 1
                sample.gt_instances = InstanceData(
                    bboxes=boxes, labels=torch.randint(0, classes, (3, ), generator=generator),
                    masks=BitmapMasks(masks, height, width))
        else:
            raise ValueError(f'scope must be one of {SCOPES}, got {scope!r}')
        samples.append(sample)
    return samples


def comparable_outputs(model, inputs):
    """Tensors to compare before and after merging: a segmentor's logits; a detector's backbone+neck features.

    A detector's later outputs pass through NMS, which is discontinuous in its inputs; the heads after the
    neck are untouched by merging, so equal features mean equal detections.
    """
    outputs = model._forward(inputs) if hasattr(model, 'decode_head') else model.extract_feat(inputs)
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def max_relative_error(outputs, references):
    """max over tensors of max|out - ref| / max|ref|."""
    return max(((out - ref).abs().max() / ref.abs().max()).item() for out, ref in zip(outputs, references))


def reparameterize_checkpoint(cfg, checkpoint_path, shape=(256, 256)):
    """Merge the backbone of a trained (training-form) checkpoint: (deploy checkpoint dict, max relative error).

    The error compares the model's outputs (see :func:`comparable_outputs`) before and after merging on one
    random input of ``shape``, in eval mode, on the CPU in float32.
    """
    checkpoint = safe_load(checkpoint_path)
    state = checkpoint.get('state_dict') if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{checkpoint_path}: expected an mmengine checkpoint with a state_dict, got '
                         f'{sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__}')
    if is_deploy_form(state):
        raise ValueError(f'{checkpoint_path} is already in deploy form (its backbone has lkb_reparam weights)')
    model = build_model(cfg).eval()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f'{checkpoint_path} does not fit the model of {cfg.filename}: {err}') from None
    inputs = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = comparable_outputs(model, inputs)
        merged = switch_to_deploy(model)
        after = comparable_outputs(model, inputs)
    error = max_relative_error(after, before)
    meta = dict(checkpoint.get('meta') or {})
    meta['replk_mm_deploy'] = dict(source=osp.basename(checkpoint_path), merged_convs=merged,
                                   max_relative_error=error, input_shape=list(shape))
    return dict(meta=meta, state_dict=model.state_dict()), error


def save_atomic(obj, path):
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written ``path``."""
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=directory)
    os.close(handle)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def same_file(a, b):
    """Whether two paths name one file (also through links), for the tools' refusal to overwrite inputs."""
    return osp.exists(a) and osp.exists(b) and osp.samefile(a, b) or osp.abspath(a) == osp.abspath(b)
