# UperNet, RepLKNet-31B (ImageNet-22K), ADE20K 640x640, 160k iterations, global batch 16 (8 GPUs x 2).
# Published: 51.5 mIoU single-scale / 52.3 multi-scale, 112M parameters.
_base_ = ['./_base_/upernet_replknet.py', 'mmseg::_base_/datasets/ade20k_640x640.py']
crop_size = (640, 640)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='31B', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31B_ImageNet-22K_224.pth')),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(426, 426)))
train_dataloader = dict(batch_size=2)
