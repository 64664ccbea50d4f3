# Cascade Mask R-CNN + RepLKNet, the paper's COCO 3x recipe: the settings shared by every detection config here,
# as the official detection/configs/RepLKNet_cascade_mask_rcnn_coco.py and its *_cascade_mask_rcnn_3x_coco.py
# leaves. Leaf configs set the arch, its channels, the drop path, the pretrained file and the batch.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
# replk_mm.models.mixed_precision: under --amp / --amp-dtype the proposals, NMS and RoI pooling run in float32
# (mmcv 2.1.0 has no bf16 RoIAlign and a float32-only NMS); in float32 these are mmdet's RPNHead and
# SingleRoIExtractor.
custom_imports = dict(imports=['replk_mm', 'replk_mm.models.mixed_precision'], allow_failed_imports=False)
# Lets mmdet's own tools load mmengine checkpoints with torch.load(weights_only=True) (--resume, load_from).
custom_hooks = [dict(type='MMEngineCheckpointLoadingHook')]

# SyncBN for the multi-GPU recipe; a single-process run falls back to plain BN by itself.
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,
        type='RepLKNet',
        arch='31B',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.6,
        with_cp=True,  # as released (use_checkpoint=True); configs whose memory was measured turn it off
        norm_cfg=norm_cfg),
    neck=dict(in_channels=[128, 256, 512, 1024]),
    rpn_head=dict(type='FP32ProposalRPNHead'),
    # Three cascade stages of 4conv1fc box heads, class-specific deltas decoded for the GIoU loss.
    roi_head=dict(bbox_roi_extractor=dict(type='FP32RoIExtractor'), mask_roi_extractor=dict(type='FP32RoIExtractor'),
                  bbox_head=[
        dict(type='Shared4Conv1FCBBoxHead', in_channels=256, conv_out_channels=256, fc_out_channels=1024,
             num_classes=80, norm_cfg=norm_cfg, reg_class_agnostic=False, reg_decoded_bbox=True,
             bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
             loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
             loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])
    ]))

# Multi-scale + crop augmentation (DETR / Sparse R-CNN), as the Swin and ConvNeXt 3x recipes.
multi_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333), (640, 1333),
                (672, 1333), (704, 1333), (736, 1333), (768, 1333), (800, 1333)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice', transforms=[
        [dict(type='RandomChoiceResize', scales=multi_scales, keep_ratio=True)],
        [dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)], keep_ratio=True),
         dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
         dict(type='RandomChoiceResize', scales=multi_scales, keep_ratio=True)],
    ]),
    dict(type='PackDetInputs'),
]
# 3x: 36 epochs, x0.1 at epochs 27 and 33, after a 500-iteration linear warm-up from 0.001 (mmdet 2.x's
# schedule_1x, which the official files inherit).
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
# AdamW, no weight decay on norms, no gradient clipping; parameters of equal settings share one AdamW group.
# Mixed precision: --amp (fp16, dynamic loss scaling) or --amp-dtype bfloat16 with tools/train.py.
optim_wrapper = dict(
    constructor='MergedGroupsOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0))
# The official files put 1 image on each GPU (XL: 4) and do not state the number of GPUs; these configs
# assume mmdet's 8, so a global batch of 8 (XL: 32), and keep lr 4e-4 unscaled. base_batch_size states
# that batch (leaf configs set it); the lr was never scaled by the authors, so to reproduce leave
# --auto-scale-lr off: the schedule is in epochs, and fewer GPUs see the same images in more iterations.
train_dataloader = dict(batch_size=1, dataset=dict(pipeline=train_pipeline))
auto_scale_lr = dict(base_batch_size=8)
