# Cascade Mask R-CNN 3x, RepLKNet-31B (ImageNet-1K), COCO, global batch 16 (8 GPUs x 2).
# Another global batch B: pass --auto-scale-lr (lr 4e-4 x B / 16, auto_scale_lr.base_batch_size = 16).
# Published: 52.2 box AP / 45.2 mask AP, 137M parameters.
_base_ = ['./_base_/cascade_mask_rcnn_replknet.py']
model = dict(
    backbone=dict(arch='31B', drop_path_rate=0.6,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31B_ImageNet-1K_224.pth')))
