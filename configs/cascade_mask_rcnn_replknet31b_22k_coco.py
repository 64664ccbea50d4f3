# Cascade Mask R-CNN 3x, RepLKNet-31B (ImageNet-22K), COCO.
# Follows the official detection/configs/RepLKNet-31B_22Kpretrain_cascade_mask_rcnn_3x_coco.py.
# Global batch 8 = 8 GPUs x 1 image (the official file: 1 per GPU, GPU count not stated), 36 epochs of train2017
# (about 4.2M images), warm-up 500 iterations (linear from 0.001); AdamW lr 4e-4, not scaled
# (base_batch_size 8); drop path 0.4; no gradient checkpointing (the official file has it; measured, see below).
# Train: shorter side 480-800 (long side up to 1333), or resize 400-600, crop 384-600 and resize again; test 1333x800.
# Published: 53.0 box AP / 46.0 mask AP, 137M parameters.
_base_ = ['./_base_/cascade_mask_rcnn_replknet.py']
model = dict(
    # No gradient checkpointing: the same network as cascade_mask_rcnn_replknet31b_coco.py, whose comment gives the
    # measured memory and speed; on GPUs of less than 16 GB, add --cfg-options model.backbone.with_cp=True.
    backbone=dict(arch='31B', drop_path_rate=0.4, with_cp=False,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31B_ImageNet-22K_224.pth')))
