# Peer for tools/benchmark.py: our Cascade Mask R-CNN 3x recipe (heads, float32 RoI ops, optimizer, pipeline) with
# mmdet's ResNet-50 (its standard detection settings: stem and first stage frozen, BN statistics frozen) in place
# of RepLKNet-31B. Random init: no pretrained file is loaded (the benchmark measures speed and memory only).
_base_ = ['../cascade_mask_rcnn_replknet31b_coco.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=None),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
