# The detection test config: a tiny RepLKNet (large kernels kept, few channels) with a narrow Cascade Mask
# R-CNN, trained from scratch on the 3-class synthetic COCO-format set that
# `replk_mm.data.make_coco(data_root)` writes. About a second per iteration on a CPU core;
# otherwise the recipe of cascade_mask_rcnn_replknet31b_coco.py (4conv1fc GIoU cascade, multi-scale + crop, AdamW).
_base_ = ['./cascade_mask_rcnn_replknet31b_coco.py']
data_root = 'data/synthetic_coco/'
metainfo = dict(classes=('person', 'bicycle', 'car'))  # COCO's first three categories
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, large_kernel_sizes=[31, 29, 27, 13], layers=[1, 1, 1, 1],
                  channels=[16, 32, 64, 128], small_kernel=5, dw_ratio=1),
        drop_path_rate=0.1, with_cp=False, norm_cfg=norm_cfg, init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=[
            dict(type='Shared4Conv1FCBBoxHead', in_channels=32, conv_out_channels=32, fc_out_channels=128,
                 num_classes=3, norm_cfg=norm_cfg, reg_class_agnostic=False, reg_decoded_bbox=True,
                 bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
                 loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                 loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
            for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])
        ],
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(in_channels=32, conv_out_channels=32, num_classes=3)),
    # 100 proposals per image instead of 2000/1000: the RoI heads dominate the CPU time.
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100)),
    # score_thr 0: after a few CPU iterations every score is still under mmdet's 0.05, and CocoMetric
    # reports no AP at all without a single detection.
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100), rcnn=dict(score_thr=0.0)))

# The 3x augmentation at a sixth of the scale: 128 px images, shorter side 96-128, crops of 64-96 px.
multi_scales = [(96, 224), (112, 224), (128, 224)]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice', transforms=[
        [dict(type='RandomChoiceResize', scales=multi_scales, keep_ratio=True)],
        [dict(type='RandomChoiceResize', scales=[(80, 224), (96, 224)], keep_ratio=True),
         dict(type='RandomCrop', crop_type='absolute_range', crop_size=(64, 96), allow_negative_crop=True),
         dict(type='RandomChoiceResize', scales=multi_scales, keep_ratio=True)],
    ]),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(224, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
auto_scale_lr = dict(base_batch_size=2)  # lr 1e-3 belongs to this config's single-process batch of 2
# A short warm-up, then a constant lr: train_cfg.max_epochs can be changed on its own.
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]
default_hooks = dict(logger=dict(interval=2), checkpoint=dict(max_keep_ckpts=2))
randomness = dict(seed=0)
