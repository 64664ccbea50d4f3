# UperNet, RepLKNet-31B (ImageNet-1K), ADE20K 512x512, 160k iterations, global batch 16 (8 GPUs x 2).
# Published: 49.9 mIoU single-scale / 50.6 multi-scale, 112M parameters.
_base_ = ['./_base_/upernet_replknet.py', 'mmseg::_base_/datasets/ade20k.py']
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='31B', drop_path_rate=0.5,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31B_ImageNet-1K_224.pth')))
train_dataloader = dict(batch_size=2)
