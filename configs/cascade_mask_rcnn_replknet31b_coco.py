# Cascade Mask R-CNN 3x, RepLKNet-31B (ImageNet-1K), COCO.
# Follows the official detection/configs/RepLKNet-31B_1Kpretrain_cascade_mask_rcnn_3x_coco.py.
# Global batch 8 = 8 GPUs x 1 image (the official file: 1 per GPU, GPU count not stated), 36 epochs of train2017
# (about 4.2M images), warm-up 500 iterations (linear from 0.001); AdamW lr 4e-4, not scaled
# (base_batch_size 8); drop path 0.6; no gradient checkpointing (the official file has it; measured, see below).
# Train: shorter side 480-800 (long side up to 1333), or resize 400-600, crop 384-600 and resize again; test 1333x800.
# Published: 52.2 box AP / 45.2 mask AP, 137M parameters.
_base_ = ['./_base_/cascade_mask_rcnn_replknet.py']
model = dict(
    # No gradient checkpointing (the official file has it; it changes memory and speed, not results): measured on
    # an H200, bf16, 2 multi-scale images (1333x800 class) per step take 12.1 GiB without it (the same heads on
    # Swin-B 10.8) and 241 ms against 766 ms with it (docs/benchmarks.md). On GPUs of less than 16 GB, add
    # --cfg-options model.backbone.with_cp=True.
    backbone=dict(arch='31B', drop_path_rate=0.6, with_cp=False,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31B_ImageNet-1K_224.pth')))
