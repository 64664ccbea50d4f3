# The FCOS test config: a tiny RepLKNet (large kernels kept, few channels) with a narrow FPN and FCOS head,
# trained from scratch on the 3-class synthetic COCO-format set that
# `replk_mm.data.make_coco(data_root)` writes. Seconds per epoch on a CPU core; otherwise the
# recipe of fcos_replknet31b_coco.py (FPN from stage 2 with extra convs on outputs, focal / IoU / centerness
# losses, two-scale training, AdamW with gradient clipping).
_base_ = ['./fcos_replknet31b_coco.py']
data_root = 'data/synthetic_coco/'
metainfo = dict(classes=('person', 'bicycle', 'car'))  # COCO's first three categories
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, large_kernel_sizes=[31, 29, 27, 13], layers=[1, 1, 1, 1],
                  channels=[16, 32, 64, 128], small_kernel=5, dw_ratio=1),
        drop_path_rate=0.1, with_cp=False, norm_cfg=dict(type='BN', requires_grad=True), init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    # GN in 8 groups of 4 channels: P7 of a 128 px image is 1x1, and GN needs more than one value per group.
    bbox_head=dict(num_classes=3, in_channels=32, feat_channels=32, norm_cfg=dict(num_groups=8)),
    # score_thr 0: after a few CPU iterations most scores are still under mmdet's 0.05, and CocoMetric
    # reports no AP at all without a single detection.
    test_cfg=dict(score_thr=0.0))

# The two training scales at a sixth of the size: 128 px images, shorter side 112 or 128.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize', scales=[(224, 112), (224, 128)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(224, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
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
