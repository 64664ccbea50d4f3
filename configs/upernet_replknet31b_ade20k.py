# UperNet, RepLKNet-31B (ImageNet-1K), ADE20K 512x512. Follows the official
# segmentation/configs/RepLKNet-31B_1Kpretrain_upernet_160k_ade20k_512.py (40k iterations x 64 GPUs x 2 images
# = 5.12M images, 400 warm-up iterations, lr 2e-4) at its own one-node equivalent:
# global batch 16 = 8 GPUs x 2 images, 320k iterations, 5.12M images seen; warm-up 3,200 iterations
# (51,200 images, as the official 400 x 128); lr 2e-4, not scaled (base_batch_size 128: the official batch).
# Train: scale 2048x512, ratio 0.5-2.0, crop 512; test: whole image at 2048x512; drop path 0.5.
# Published: 49.9 mIoU single-scale / 50.6 multi-scale, 112M parameters.
_base_ = ['./_base_/upernet_replknet.py', 'mmseg::_base_/datasets/ade20k.py']
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    # No gradient checkpointing (the official file has it; it changes memory and speed, not results): measured on
    # an H200 at 2 x 512x512, bf16, the step takes 5.4 GiB without it (mmseg's UperNet-Swin-B 5.0) and 102 ms
    # against 217 ms with it (docs/benchmarks.md). The backbone's training forward and backward replay as CUDA
    # graphs (every crop has one size): at 2 images per GPU launching kernels costs more host time than the GPU
    # spends on them, and with DDP each SyncBN layer adds collectives (docs/benchmarks.md, "Several GPUs").
    # Eager: --cfg-options model.backbone.cuda_graph=False. On GPUs of less than 8 GB:
    # --cfg-options model.backbone.cuda_graph=False model.backbone.with_cp=True.
    backbone=dict(arch='31B', drop_path_rate=0.5, with_cp=False, cuda_graph=True,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31B_ImageNet-1K_224.pth')),
    test_cfg=dict(mode='whole'))
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(base_batch_size=128)
