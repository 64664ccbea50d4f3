"""Mixed precision for Cascade Mask R-CNN on a CPU, bf16 included.

A real training step of the tiny detection config (loss, backward, optimizer step) under the
AmpOptimWrapper that ``tools/train.py --amp-dtype`` configures, and inference under the same autocast.
mmcv 2.1.0's RoIAlign and NMS have no bf16 kernels (CPU or CUDA): with mmdet's RPNHead or
SingleRoIExtractor the step fails; with FP32ProposalRPNHead and FP32RoIExtractor only the proposal
decoding, NMS and RoI pooling run in float32, and the backbone, neck and heads in bf16.
"""
import math
from types import SimpleNamespace

import pytest
import torch
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import ConfigDict
from mmengine.optim import build_optim_wrapper
from mmengine.optim.optimizer import amp_optimizer_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.runner.amp import autocast

from replk_mm.data import make_coco
from replk_mm.models.mixed_precision import FP32PredictionFCOSHead, FP32ProposalRPNHead, FP32RoIExtractor

from conftest import PROJECT_ROOT, run_main

TINY_CONFIG = PROJECT_ROOT / 'configs' / 'cascade_mask_rcnn_replknet_tiny_synthetic_coco.py'
TINY_FCOS_CONFIG = PROJECT_ROOT / 'configs' / 'fcos_replknet_tiny_synthetic_coco.py'
# What the detection configs set for mixed precision (the tiny config may not have it yet).
MIXED_PRECISION_TYPES = {'model.rpn_head.type': 'FP32ProposalRPNHead',
                         'model.roi_head.bbox_roi_extractor.type': 'FP32RoIExtractor',
                         'model.roi_head.mask_roi_extractor.type': 'FP32RoIExtractor'}


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    return make_coco(tmp_path_factory.mktemp('synthetic_coco'), num_train=4, num_val=2)


def train_config(monkeypatch, work_dir, coco_root, *flags, types=MIXED_PRECISION_TYPES, config=TINY_CONFIG):
    """The config that tools/train.py hands to mmengine's Runner for ``config``, these flags and model ``types``
    ({config key: type}); the Runner is not run."""
    handed = []

    def from_cfg(cfg):
        handed.append(cfg)
        return SimpleNamespace(train=lambda: None)

    monkeypatch.setattr(Runner, 'from_cfg', staticmethod(from_cfg))
    options = [f'{split}_dataloader.dataset.data_root={coco_root}/' for split in ('train', 'val', 'test')]
    options += [f'{key}={value}' for key, value in types.items()]
    run_main(monkeypatch, 'train', config, '--work-dir', work_dir, *flags, '--cfg-options', *options)
    (cfg, ) = handed
    return cfg


@pytest.mark.parametrize('flags, dtype, loss_scale', [
    (['--amp'], None, 'dynamic'),  # as before --amp-dtype: the device's default (float16 on GPUs)
    (['--amp-dtype', 'float16'], 'float16', 'dynamic'),
    (['--amp-dtype', 'bfloat16'], 'bfloat16', dict(enabled=False)),
    (['--amp', '--amp-dtype', 'bfloat16'], 'bfloat16', dict(enabled=False)),
])
def test_amp_flags_map_to_amp_optim_wrapper(monkeypatch, tmp_path, coco_root, flags, dtype, loss_scale):
    cfg = train_config(monkeypatch, tmp_path, coco_root, *flags)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.get('dtype') == dtype
    assert cfg.optim_wrapper.loss_scale == loss_scale
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'  # the config's optimizer is kept


def test_no_amp_flag_keeps_float32(monkeypatch, tmp_path, coco_root):
    cfg = train_config(monkeypatch, tmp_path, coco_root)
    assert cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'
    assert 'dtype' not in cfg.optim_wrapper


def test_amp_dtype_rejects_other_dtypes(monkeypatch, tmp_path, coco_root, capsys):
    with pytest.raises(SystemExit) as exc:
        train_config(monkeypatch, tmp_path, coco_root, '--amp-dtype', 'float32')
    assert exc.value.code == 2
    assert "--amp-dtype: invalid choice: 'float32'" in capsys.readouterr().err


def build_for_training(monkeypatch, cfg):
    """Model, AmpOptimWrapper and one training batch, built from ``cfg`` as mmengine's Runner builds them."""
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    # AmpOptimWrapper refuses to be built without a GPU; its autocast and step work on a CPU all the same.
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader, seed=0)))
    return model, optim_wrapper, batch


def record_output_dtypes(modules):
    """{name: set of output tensor dtypes}, filled by forward hooks on ``modules`` ({name: module})."""
    seen = {name: set() for name in modules}

    def hook(name):
        def record(module, args, output):
            outputs = output if isinstance(output, (tuple, list)) else (output, )
            seen[name].update(out.dtype for out in outputs if isinstance(out, torch.Tensor))
        return record

    for name, module in modules.items():
        module.register_forward_hook(hook(name))
    return seen


def test_bf16_training_step(monkeypatch, tmp_path, coco_root):
    """(fp16 autocast is GPU-only in mmengine: on a CPU it allows bf16 alone.)"""
    cfg = train_config(monkeypatch, tmp_path, coco_root, '--amp-dtype', 'bfloat16')
    model, optim_wrapper, batch = build_for_training(monkeypatch, cfg)
    assert optim_wrapper.cast_dtype == torch.bfloat16 and not optim_wrapper.loss_scaler.is_enabled()
    roi_head = model.roi_head
    assert isinstance(model.rpn_head, FP32ProposalRPNHead)
    assert all(isinstance(e, FP32RoIExtractor) for e in (*roi_head.bbox_roi_extractor, *roi_head.mask_roi_extractor))
    roi_dtypes = set()  # the boxes given to the RoI extractors: proposals, then each stage's refined boxes
    for extractor in (*roi_head.bbox_roi_extractor, *roi_head.mask_roi_extractor):
        extractor.register_forward_pre_hook(lambda module, args: roi_dtypes.add(args[1].dtype))
    dtypes = record_output_dtypes({
        'backbone': model.backbone, 'neck': model.neck, 'rpn_head': model.rpn_head.rpn_reg,
        'bbox_roi_extractor': roi_head.bbox_roi_extractor[0], 'bbox_head': roi_head.bbox_head[2],
        'mask_head': roi_head.mask_head[2]})
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    log_vars = model.train_step(batch, optim_wrapper)  # what the Runner's training loop calls

    assert dtypes == dict.fromkeys(dtypes, {torch.bfloat16}), dtypes  # no silent float32 fallback
    assert roi_dtypes == {torch.float32}
    losses = {k: v.item() for k, v in log_vars.items() if 'loss' in k}
    assert {'loss_rpn_cls', 's0.loss_cls', 's2.loss_bbox', 's2.loss_mask'} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values()), losses
    assert losses['loss'] > 0
    for name, p in model.named_parameters():  # the optimizer stepped on float32 master weights
        assert p.dtype == torch.float32, name
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    for prefix in ('backbone.', 'neck.', 'rpn_head.', 'roi_head.bbox_head.0.', 'roi_head.mask_head.2.'):
        assert any(name.startswith(prefix) for name in changed), prefix


@pytest.mark.parametrize('key, mmdet_type, message', [
    ('model.rpn_head.type', 'RPNHead', 'expected scalar type Float but found BFloat16'),  # NMS on bf16 boxes
    ('model.roi_head.bbox_roi_extractor.type', 'SingleRoIExtractor', "not implemented for 'BFloat16'"),
])
def test_bf16_training_step_fails_with_mmdets_types(monkeypatch, tmp_path, coco_root, key, mmdet_type, message):
    """With mmdet's RPNHead, bf16 boxes reach mmcv's NMS; with its SingleRoIExtractor, bf16 features
    reach mmcv's RoIAlign: neither has a bf16 kernel."""
    cfg = train_config(monkeypatch, tmp_path, coco_root, '--amp-dtype', 'bfloat16',
                       types={**MIXED_PRECISION_TYPES, key: mmdet_type})
    model, optim_wrapper, batch = build_for_training(monkeypatch, cfg)
    with pytest.raises(RuntimeError, match=message):  # NotImplementedError is a RuntimeError
        model.train_step(batch, optim_wrapper)


def test_bf16_inference(monkeypatch, tmp_path, coco_root):
    """tools/benchmark.py --amp's path: test_step under bf16 autocast (RPN and per-class NMS, mask pasting)."""
    cfg = train_config(monkeypatch, tmp_path, coco_root, '--amp-dtype', 'bfloat16')
    model, _, _ = build_for_training(monkeypatch, cfg)
    model.eval()
    batch = next(iter(Runner.build_dataloader(cfg.val_dataloader, seed=0)))
    dtypes = record_output_dtypes({'backbone': model.backbone, 'bbox_head': model.roi_head.bbox_head[2]})
    with torch.no_grad(), autocast(dtype=torch.bfloat16):
        results = model.test_step(batch)
    assert dtypes == {'backbone': {torch.bfloat16}, 'bbox_head': {torch.bfloat16}}
    for sample, result in zip(batch['data_samples'], results):
        pred = result.pred_instances
        assert 0 < len(pred) <= cfg.model.test_cfg.rcnn.max_per_img
        assert torch.isfinite(pred.bboxes).all() and torch.isfinite(pred.scores).all()
        height, width = sample.ori_shape
        assert pred.masks.shape[1:] == (height, width)
        assert (pred.bboxes[:, 2:] <= torch.tensor([width, height])).all()


@pytest.mark.parametrize('dtype, name', [(torch.bfloat16, 'BFloat16'), (torch.float16, 'Half')])
def test_fp32_proposal_rpn_head_under_autocast(dtype, name):
    """mmcv's NMS reads boxes as float32 (CPU and CUDA) and mmdet makes anchors and proposals in the scores'
    dtype: under fp16 autocast as under bf16, mmdet's RPNHead fails and ours gives float32 proposals."""
    init_default_scope('mmdet')
    head_cfg = dict(
        in_channels=8, feat_channels=8,
        anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4, target_stds=[1.] * 4),
        test_cfg=ConfigDict(nms_pre=200, max_per_img=50, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0))
    torch.manual_seed(0)
    mmdet_head = MODELS.build(dict(head_cfg, type='RPNHead'))
    fp32_head = MODELS.build(dict(head_cfg, type='FP32ProposalRPNHead'))
    fp32_head.load_state_dict(mmdet_head.state_dict())
    feats = tuple(torch.randn(1, 8, 512 // s, 672 // s) for s in (4, 8))
    samples = [DetDataSample(metainfo=dict(img_shape=(512, 672)))]

    with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
        with pytest.raises(RuntimeError, match=f'expected scalar type Float but found {name}'):
            mmdet_head.predict(feats, samples)
        (proposals, ) = fp32_head.predict(feats, samples)

    assert proposals.bboxes.dtype == torch.float32 and 0 < len(proposals) <= 50
    assert (proposals.bboxes >= 0).all() and (proposals.bboxes <= torch.tensor([672, 512] * 2)).all()
    # Decoded in float32: most coordinates lie between the half-precision values.
    assert not torch.equal(proposals.bboxes, proposals.bboxes.to(dtype).float())


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_fp32_roi_extractor_pools_half_features_at_float32_boxes(dtype):
    """Half-precision features, float32 RoIs: the result is mmdet's float32 pooling of the same features at
    the unrounded boxes, in the features' dtype; the gradient reaches the features in that dtype."""
    config = dict(roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0), out_channels=4,
                  featmap_strides=[4, 8])
    fp32_extractor, reference = FP32RoIExtractor(**config), SingleRoIExtractor(**config)
    generator = torch.Generator().manual_seed(0)
    feats = tuple(torch.randn(1, 4, 320 // s, 1280 // s, generator=generator).to(dtype).requires_grad_()
                  for s in (4, 8))
    # bf16 steps by 4 pixels past x=512 and by 8 past 1024 (1001.3 -> 1000, 1180.6 -> 1184); fp16 by 0.5 and 1.
    rois = torch.tensor([[0., 1001.3, 10.2, 1180.6, 70.9], [0., 3.7, 5.1, 300.4, 290.6]])

    out = fp32_extractor(feats, rois)

    assert out.dtype == dtype and out.shape == (2, 4, 7, 7)
    float_feats = tuple(f.detach().float() for f in feats)
    assert torch.equal(out, reference(float_feats, rois).to(dtype))
    assert not torch.equal(out[0], reference(float_feats, rois.to(dtype).float()).to(dtype)[0])
    out.float().sum().backward()
    assert all(f.grad.dtype == dtype and f.grad.abs().sum() > 0 for f in feats)



def test_fcos_bf16_training_step_and_inference(monkeypatch, tmp_path, coco_root):
    """The tiny FCOS config under bf16 autocast: a training step in bf16, detections in float32."""
    cfg = train_config(monkeypatch, tmp_path, coco_root, '--amp-dtype', 'bfloat16', types={}, config=TINY_FCOS_CONFIG)
    model, optim_wrapper, batch = build_for_training(monkeypatch, cfg)
    assert isinstance(model.bbox_head, FP32PredictionFCOSHead)
    dtypes = record_output_dtypes({'backbone': model.backbone, 'neck': model.neck,
                                   'bbox_head': model.bbox_head.conv_cls})
    log_vars = model.train_step(batch, optim_wrapper)
    assert dtypes == dict.fromkeys(dtypes, {torch.bfloat16}), dtypes
    losses = {k: v.item() for k, v in log_vars.items() if 'loss' in k}
    assert {'loss_cls', 'loss_bbox', 'loss_centerness'} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values()), losses

    model.eval()
    batch = next(iter(Runner.build_dataloader(cfg.val_dataloader, seed=0)))
    with torch.no_grad(), autocast(dtype=torch.bfloat16):
        results = model.test_step(batch)
    for sample, result in zip(batch['data_samples'], results):
        pred = result.pred_instances
        assert pred.bboxes.dtype == torch.float32 and 0 < len(pred) <= cfg.model.test_cfg.max_per_img
        height, width = sample.ori_shape
        assert torch.isfinite(pred.bboxes).all() and (pred.bboxes[:, 2:] <= torch.tensor([width, height])).all()


def test_fp32_prediction_fcos_head_keeps_point_coordinates_under_bf16():
    """mmdet's FCOSHead makes its points in the class scores' dtype: under bf16 autocast a point at x = 1044
    becomes 1040 (bf16 steps by 8 past 1024) and so does every box around it. Ours decodes in float32."""
    init_default_scope('mmdet')
    cfg = dict(num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1, strides=[8],
               norm_cfg=dict(type='GN', num_groups=4, requires_grad=True),
               test_cfg=ConfigDict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                                   nms=dict(type='nms', iou_threshold=0.5), max_per_img=1))
    mmdet_head = MODELS.build(dict(cfg, type='FCOSHead'))
    fp32_head = MODELS.build(dict(cfg, type='FP32PredictionFCOSHead'))
    # One confident class-1 point, at row 3 and column 130 of the stride-8 map: centre (28, 1044); every
    # point predicts distances of 10 pixels to the four sides (mmdet's head returns them in float32).
    cls_scores = torch.full((1, 3, 8, 168), -10.)
    cls_scores[0, 1, 3, 130] = 10.
    distances, centerness = torch.full((1, 4, 8, 168), 10.), torch.full((1, 1, 8, 168), 10.)
    metas = [dict(img_shape=(64, 1344), scale_factor=(1., 1.))]
    outs = ([cls_scores.bfloat16()], [distances], [centerness.bfloat16()])

    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        (mmdet_pred, ) = mmdet_head.predict_by_feat(*outs, batch_img_metas=metas)
        (fp32_pred, ) = fp32_head.predict_by_feat(*outs, batch_img_metas=metas)

    assert fp32_pred.labels.tolist() == mmdet_pred.labels.tolist() == [1]
    assert fp32_pred.bboxes.tolist() == [[1034., 18., 1054., 38.]]
    assert mmdet_pred.bboxes.tolist() == [[1030., 18., 1050., 38.]]
