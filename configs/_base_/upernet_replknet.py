# UperNet + RepLKNet: the settings shared by every segmentation config here (no dataset).
# Leaf configs add a dataset base, the arch, its channels and the pretrained file.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['replk_mm'], allow_failed_imports=False)

# SyncBN for the multi-GPU recipe; a single-process run falls back to plain BN by itself.
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='RepLKNet',
        arch='31B',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.5,
        norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[128, 256, 512, 1024], channels=512, pool_scales=(1, 2, 3, 6),
                     num_classes=150),
    auxiliary_head=dict(in_channels=512, in_index=2, channels=256, num_classes=150,
                        loss_decode=dict(loss_weight=0.4)))

# AdamW, no weight decay on norms; linear warm-up then poly decay.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
# The schedules assume a global batch of 16 (8 GPUs x 2 images). With another global batch B, use
# lr = 2e-4 * B / 16, or pass --auto-scale-lr to tools/train.py (it reads base_batch_size).
auto_scale_lr = dict(enable=False, base_batch_size=16)
