# UperNet, RepLKNet-31B (ImageNet-1K), Cityscapes 512x1024 crops, 80k iterations,
# global batch 8 (4 GPUs x 2). Published (769x769 crops in the reference): 83.1 / 83.5 mIoU.
_base_ = ['./_base_/upernet_replknet.py', 'mmseg::_base_/datasets/cityscapes.py']
crop_size = (512, 1024)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='31B', drop_path_rate=0.5,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31B_ImageNet-1K_224.pth')),
    decode_head=dict(num_classes=19),
    auxiliary_head=dict(num_classes=19))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=80000),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=8000))
auto_scale_lr = dict(base_batch_size=8)
train_dataloader = dict(batch_size=2)
