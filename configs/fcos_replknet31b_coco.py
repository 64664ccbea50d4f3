# FCOS 2x, RepLKNet-31B (ImageNet-1K), COCO boxes. Follows the official
# detection/configs/RepLKNet-31B_1Kpretrain_fcos_2x_coco.py on mmdet 3.3's building blocks.
# Global batch 16 = 8 GPUs x 2 images (the official file: 2 per GPU, GPU count not stated), 24 epochs of
# train2017 (about 2.8M images), lr x0.1 at epochs 16 and 22, constant warm-up of 500 iterations at 1/3 of the
# lr; AdamW lr 2e-4, not scaled (base_batch_size 16), gradient clipping at norm 35; drop path 0.5; gradient
# checkpointing (the official use_checkpoint=True).
# Train: (1333, 640) or (1333, 800), keep ratio; test 1333x800.
# The official optimizer lacks _delete_ and so inherits momentum=0.9 from mmdet 2.x's SGD schedule base, which
# torch's AdamW rejects; this config follows its evident intent (AdamW, betas 0.9/0.999, weight decay 0.05,
# none on norms). Published: 47.0 box AP, 87M parameters.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
# replk_mm.models.mixed_precision: under --amp / --amp-dtype the detections are decoded and NMS-filtered in
# float32 (mmcv 2.1.0's NMS reads float32 boxes only); in float32 the head is mmdet's FCOSHead.
custom_imports = dict(imports=['replk_mm', 'replk_mm.models.mixed_precision'], allow_failed_imports=False)
# Lets mmdet's own tools load mmengine checkpoints with torch.load(weights_only=True) (--resume, load_from).
custom_hooks = [dict(type='MMEngineCheckpointLoadingHook')]

model = dict(
    type='FCOS',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(
        type='RepLKNet',
        arch='31B',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.5,
        with_cp=True,
        # SyncBN for the multi-GPU recipe; a single-process run falls back to plain BN by itself.
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31B_ImageNet-1K_224.pth')),
    # P3-P5 from stages 2-4, P6 and P7 by stride-2 convs on P5's output.
    neck=dict(type='FPN', in_channels=[128, 256, 512, 1024], out_channels=256, start_level=1,
              add_extra_convs='on_output', num_outs=5, relu_before_extra_convs=True),
    bbox_head=dict(
        type='FP32PredictionFCOSHead',
        num_classes=80,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        strides=[8, 16, 32, 64, 128],
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='IoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=100))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize', scales=[(1333, 640), (1333, 800)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))

max_epochs = 24
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='ConstantLR', factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[16, 22], gamma=0.1),
]
optim_wrapper = dict(
    constructor='MergedGroupsOptimWrapperConstructor',  # parameters of equal settings in one AdamW group
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0),
    clip_grad=dict(max_norm=35, norm_type=2))
# The authors did not scale the lr with the batch: to reproduce, leave --auto-scale-lr off (the schedule is in
# epochs; fewer GPUs see the same images in more iterations).
auto_scale_lr = dict(base_batch_size=16)
