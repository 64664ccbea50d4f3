# UperNet, RepLKNet-31B (ImageNet-22K), ADE20K 640x640. Follows the official
# segmentation/configs/RepLKNet-31B_22Kpretrain_upernet_160k_ade20k_640.py (40k iterations x 64 GPUs x 2 images
# = 5.12M images, 400 warm-up iterations, lr 2e-4) at its own one-node equivalent:
# global batch 16 = 8 GPUs x 2 images, 320k iterations, 5.12M images seen; warm-up 3,200 iterations
# (51,200 images, as the official 400 x 128); lr 2e-4, not scaled (base_batch_size 128: the official batch).
# Train: scale 2048x512 (not 2560x640: that is only the FLOPs shape), ratio 0.5-2.0, crop 640; test: 2048x512,
# sliding 640 windows at stride 426; drop path 0.3.
# Published: 51.5 mIoU single-scale / 52.3 multi-scale, 112M parameters.
_base_ = ['./_base_/upernet_replknet.py', 'mmseg::_base_/datasets/ade20k.py']
crop_size = (640, 640)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='31B', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31B_ImageNet-22K_224.pth')),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(426, 426)))
# mmseg's ADE20K pipeline with the crop raised from 512 to 640, as the official file does.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
auto_scale_lr = dict(base_batch_size=128)
