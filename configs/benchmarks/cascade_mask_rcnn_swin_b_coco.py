# Peer for tools/benchmark.py: our Cascade Mask R-CNN 3x recipe (heads, float32 RoI ops, optimizer, pipeline) with
# mmdet's Swin-B in place of RepLKNet-31B (Swin-B: embed_dims 128, depths 2/2/18/2, heads 4/8/16/32, window 7, as
# the Swin paper's Cascade Mask R-CNN). Its stage channels equal 31B's, so the FPN and heads are the same too.
# Random init: no pretrained file is loaded (the benchmark measures speed and memory only).
_base_ = ['../cascade_mask_rcnn_replknet31b_coco.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        embed_dims=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        window_size=7,
        mlp_ratio=4,
        qkv_bias=True,
        drop_path_rate=0.3,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        with_cp=False,
        init_cfg=None),
    neck=dict(in_channels=[128, 256, 512, 1024]))
# As mmdet's Swin configs: no weight decay on the position tables either.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=dict(absolute_pos_embed=dict(decay_mult=0.),
                                                         relative_position_bias_table=dict(decay_mult=0.))))
