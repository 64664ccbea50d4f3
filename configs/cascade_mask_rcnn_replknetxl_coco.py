# Cascade Mask R-CNN 3x, RepLKNet-XL (MegData-73M), COCO, global batch 16 (8 GPUs x 2).
# Another global batch B: pass --auto-scale-lr (lr 4e-4 x B / 16, auto_scale_lr.base_batch_size = 16).
# XL: no 5x5 branch, dw_ratio 1.5, a BN on each stage output, inputs normalised by mean = std = 127.5
# (as in its pretraining). Published: 55.5 box AP / 48.0 mask AP, 392M parameters.
_base_ = ['./_base_/cascade_mask_rcnn_replknet.py']
model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(arch='XL', drop_path_rate=0.5, norm_intermediate_features=True,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-XL_MegData73M_pretrain.pth')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
