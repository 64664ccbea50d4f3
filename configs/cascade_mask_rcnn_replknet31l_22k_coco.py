# Cascade Mask R-CNN 3x, RepLKNet-31L (ImageNet-22K, 384), COCO, global batch 16 (8 GPUs x 2).
# Another global batch B: pass --auto-scale-lr (lr 4e-4 x B / 16, auto_scale_lr.base_batch_size = 16).
# Published: 53.9 box AP / 46.5 mask AP, 229M parameters.
_base_ = ['./_base_/cascade_mask_rcnn_replknet.py']
model = dict(
    backbone=dict(arch='31L', drop_path_rate=0.7,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31L_ImageNet-22K_384.pth')),
    neck=dict(in_channels=[192, 384, 768, 1536]))
