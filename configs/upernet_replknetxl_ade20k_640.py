# UperNet, RepLKNet-XL (MegData-73M), ADE20K 640x640, 160k iterations, global batch 16 (8 GPUs x 2).
# XL: no 5x5 branch, dw_ratio 1.5, a BN on each stage output, inputs normalised by mean = std = 127.5.
# Published: 55.2 mIoU single-scale / 56.0 multi-scale, 374M parameters.
_base_ = ['./_base_/upernet_replknet.py', 'mmseg::_base_/datasets/ade20k_640x640.py']
crop_size = (640, 640)
model = dict(
    data_preprocessor=dict(size=crop_size, mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(arch='XL', drop_path_rate=0.5, norm_intermediate_features=True,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-XL_MegData73M_pretrain.pth')),
    decode_head=dict(in_channels=[256, 512, 1024, 2048]),
    auxiliary_head=dict(in_channels=1024),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(426, 426)))
train_dataloader = dict(batch_size=2)
