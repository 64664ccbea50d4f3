# The quickstart: a tiny RepLKNet (large kernels kept, few channels) with UperNet, trained from
# scratch on the synthetic ADE20K-format set that `tools/quickstart.py` writes to data_root.
# A few minutes on 2 CPU cores; its own short schedule, batch and crop, no gradient checkpointing (only
# slower on a CPU); otherwise the model recipe of upernet_replknet31b_ade20k.py.
_base_ = ['./upernet_replknet31b_ade20k.py']
data_root = 'data/synthetic_ade20k'
crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, large_kernel_sizes=[31, 29, 27, 13], layers=[1, 1, 2, 1],
                  channels=[16, 32, 64, 128],
                  small_kernel=5, dw_ratio=1),
        drop_path_rate=0.1, with_cp=False, norm_cfg=norm_cfg, init_cfg=None),
    decode_head=dict(in_channels=[16, 32, 64, 128], channels=64, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=64, channels=32, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 240
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=20, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
auto_scale_lr = dict(base_batch_size=4)  # lr 2e-3 belongs to this config's single-process batch of 4
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=2))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
