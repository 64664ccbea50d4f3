# Cascade Mask R-CNN 3x, RepLKNet-XL (MegData-73M), COCO.
# Follows the official detection/configs/RepLKNet-XL_MegData73Mpretrain_cascade_mask_rcnn_3x_coco.py.
# Global batch 32 = 8 GPUs x 4 images (the official file: 4 per GPU, GPU count not stated), 36 epochs of train2017
# (about 4.2M images), warm-up 500 iterations (linear from 0.001); AdamW lr 4e-4, not scaled
# (base_batch_size 32); drop path 0.5; gradient checkpointing (the official use_checkpoint=True).
# Train: shorter side 480-800 (long side up to 1333), or resize 400-600, crop 384-600 and resize again; test 1333x800.
# XL: no 5x5 branch, dw_ratio 1.5, a BN on each stage output, inputs normalised by mean = std = 127.5
# (as in its pretraining). Published: 55.5 box AP / 48.0 mask AP, 392M parameters.
_base_ = ['./_base_/cascade_mask_rcnn_replknet.py']
model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(arch='XL', drop_path_rate=0.5, norm_intermediate_features=True,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-XL_MegData73M_pretrain.pth')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
train_dataloader = dict(batch_size=4)
auto_scale_lr = dict(base_batch_size=32)
