# UperNet, RepLKNet-31L (ImageNet-22K), ADE20K 640x640. Follows the official
# segmentation/configs/RepLKNet-31L_22Kpretrain_upernet_160k_ade20k_640.py (80k iterations x 64 GPUs x 1 image
# = 5.12M images, 800 warm-up iterations, lr 2e-4) with mmseg's 8-GPU layout:
# global batch 16 = 8 GPUs x 2 images, 320k iterations, 5.12M images seen; warm-up 3,200 iterations
# (51,200 images, as the official 800 x 64); lr 2e-4, not scaled (base_batch_size 64: the official batch).
# Otherwise the 31B-22K-640 recipe it inherits, as the official file does: scale 2048x512, ratio 0.5-2.0,
# crop 640, sliding 640 windows at stride 426 over 2048x512; drop path 0.3.
# Published: 52.4 mIoU single-scale / 52.7 multi-scale, 207M parameters.
_base_ = ['./upernet_replknet31b_22k_ade20k_640.py']
model = dict(
    backbone=dict(arch='31L', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31L_ImageNet-22K_384.pth')),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768))
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(base_batch_size=64)
