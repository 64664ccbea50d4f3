"""FCOS end to end: the tiny RepLKNet FCOS trained and tested on synthetic COCO through tools/*.py in
subprocesses, and the paper's FCOS 2x config built at full size against its published 87M parameters.
"""
import json
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from replk_mm import safe_load
from replk_mm.data import make_coco

from .helpers import PROJECT_ROOT, check, printed_metric, run_tool

pytestmark = pytest.mark.slow

CONFIG_DIR = PROJECT_ROOT / 'configs'
TINY_CONFIG = CONFIG_DIR / 'fcos_replknet_tiny_synthetic_coco.py'
NUM_TRAIN, NUM_VAL = 16, 6
ITERS_PER_EPOCH = 8  # the 15 training images with objects (the empty one is filtered out), batch 2
EPOCHS = 2  # the tiny config's max_epochs

BACKBONE_31B = 78_837_120  # REPLKNET.md: 31B, out_indices (0, 1, 2, 3), no stage norms
PUBLISHED_FCOS_31B = 87e6  # the paper's FCOS 2x, RepLKNet-31B: 47.0 box AP, 87M parameters


def conv(in_channels, out_channels, kernel, bias=True):
    return in_channels * out_channels * kernel * kernel + (out_channels if bias else 0)


def fcos_neck_and_head_parameters(stage_channels, width=256, num_classes=80, stacked_convs=4, levels=5):
    """FPN from stage 2 (laterals and 3x3 outputs on three stages, two extra 3x3 convs) and the FCOS head
    (cls and reg towers of conv + GN without conv bias, cls / box / centerness convs, one scale per level).
    """
    laterals = sum(conv(c, width, 1) for c in stage_channels[1:])
    fpn = laterals + levels * conv(width, width, 3)  # a 3x3 output conv per input level, then the extra levels
    towers = 2 * stacked_convs * (conv(width, width, 3, bias=False) + 2 * width)
    return fpn + towers + conv(width, num_classes, 3) + conv(width, 4, 3) + conv(width, 1, 3) + levels


def test_fcos_31b_parameters_match_published():
    from mmdet.models.losses import CrossEntropyLoss, FocalLoss, IoULoss
    from mmdet.registry import MODELS

    cfg = Config.fromfile(CONFIG_DIR / 'fcos_replknet31b_coco.py')
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'FCOS' and type(model.backbone).__name__ == 'RepLKNet'
    neck = model.neck
    assert (neck.start_level, neck.add_extra_convs, neck.num_outs, neck.relu_before_extra_convs) == (
        1, 'on_output', 5, True)
    head = model.bbox_head
    assert isinstance(head.loss_cls, FocalLoss) and isinstance(head.loss_bbox, IoULoss)
    assert isinstance(head.loss_centerness, CrossEntropyLoss) and head.loss_centerness.use_sigmoid
    assert head.strides == [8, 16, 32, 64, 128]

    expected = BACKBONE_31B + fcos_neck_and_head_parameters([128, 256, 512, 1024])
    assert sum(p.numel() for p in model.backbone.parameters()) == BACKBONE_31B
    assert sum(p.numel() for p in model.parameters()) == expected
    assert abs(expected / PUBLISHED_FCOS_31B - 1) < 0.01, expected


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A directory holding the synthetic set at the tiny config's data_root, relative to it: runs start there."""
    root = tmp_path_factory.mktemp('fcos')
    make_coco(root / 'data' / 'synthetic_coco', num_train=NUM_TRAIN, num_val=NUM_VAL)
    return root


@pytest.fixture(scope='module')
def trained(workspace):
    work_dir = workspace / 'train'
    check(run_tool([PROJECT_ROOT / 'tools' / 'train.py', TINY_CONFIG, '--work-dir', work_dir], cwd=workspace))
    return work_dir


def test_train(trained):
    checkpoint = safe_load(trained / f'epoch_{EPOCHS}.pth')
    assert (checkpoint['meta']['epoch'], checkpoint['meta']['iter']) == (EPOCHS, EPOCHS * ITERS_PER_EPOCH)
    state = checkpoint['state_dict']
    assert state['backbone.stages.0.blocks.0.large_kernel.lkb_origin.conv.weight'].shape == (16, 1, 31, 31)
    assert state['bbox_head.conv_cls.weight'].shape == (3, 32, 3, 3)  # sigmoid classes, no background
    assert state['bbox_head.conv_centerness.weight'].shape == (1, 32, 3, 3)
    assert 'neck.fpn_convs.4.conv.weight' in state  # P7, the second extra conv
    (scalars, ) = Path(trained).glob('*/vis_data/scalars.json')
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    losses = [record for record in records if 'loss' in record]
    assert len(losses) == EPOCHS * ITERS_PER_EPOCH // 2  # logged every 2 iterations
    assert all({'loss_cls', 'loss_bbox', 'loss_centerness'} <= set(record) for record in losses)
    assert losses[-1]['loss'] < 0.9 * losses[0]['loss'], [record['loss'] for record in losses]


def test_test_prints_coco_bbox_ap(trained, workspace):
    output = check(run_tool([PROJECT_ROOT / 'tools' / 'test.py', TINY_CONFIG, trained / f'epoch_{EPOCHS}.pth',
                             '--work-dir', workspace / 'test'], cwd=workspace))
    assert 'Evaluate annotation type *bbox*' in output  # pycocotools' own COCOeval ran
    assert 0.0 <= printed_metric(output, 'coco/bbox_mAP') <= 1.0
