# UperNet, RepLKNet-31B (ImageNet-1K), Cityscapes 769x769. Follows the official
# segmentation/configs/RepLKNet-31B_1Kpretrain_upernet_80k_cityscapes_769.py (20k iterations x 32 GPUs x 2 images
# = 1.28M images, 400 warm-up iterations, lr 2e-4) at its own single-node equivalent (its comment: 8 GPUs, 80k):
# global batch 16 = 8 GPUs x 2 images, 80k iterations, 1.28M images seen; warm-up 1,600 iterations
# (25,600 images, as the official 400 x 64); lr 2e-4, not scaled (base_batch_size 64: the official batch).
# Train: scale 2049x1025, ratio 0.5-2.0, crop 769x769; test: whole image at 2049x1025, as the official
# test_cfg; align_corners=True on both heads; drop path 0.5.
# Published: 83.1 mIoU single-scale / 83.5 multi-scale, 110M parameters.
_base_ = ['./_base_/upernet_replknet.py', 'mmseg::_base_/datasets/cityscapes_769x769.py']
crop_size = (769, 769)
model = dict(
    data_preprocessor=dict(size=crop_size),
    # No gradient checkpointing, CUDA graphs instead (see upernet_replknet31b_ade20k.py): measured on an H200 at
    # 2 x 769x769, bf16, the step takes 102.6 ms and 5.4 GiB, against 253.4 ms and 4.4 GiB with checkpointing
    # (docs/benchmarks.md). On GPUs of less than 8 GB:
    # --cfg-options model.backbone.cuda_graph=False model.backbone.with_cp=True.
    backbone=dict(arch='31B', drop_path_rate=0.5, with_cp=False, cuda_graph=True,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31B_ImageNet-1K_224.pth')),
    decode_head=dict(num_classes=19, align_corners=True),
    auxiliary_head=dict(num_classes=19, align_corners=True),
    test_cfg=dict(mode='whole'))
max_iters = 80000
warmup_iters = 1600
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=8000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=8000))
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(base_batch_size=64)
