# UperNet, RepLKNet-31L (ImageNet-22K), ADE20K 640x640, 160k iterations, global batch 16 (8 GPUs x 2).
# Published: 52.4 mIoU single-scale / 52.7 multi-scale, 207M parameters.
_base_ = ['./_base_/upernet_replknet.py', 'mmseg::_base_/datasets/ade20k_640x640.py']
crop_size = (640, 640)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='31L', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31L_ImageNet-22K_384.pth')),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(426, 426)))
train_dataloader = dict(batch_size=2)
