# The quickstart recipe on a Cityscapes-format set (leftImg8bit/gtFine, 19 train ids, 255 = ignore),
# e.g. the synthetic one from `replk_mm.datasets.make_cityscapes`. For tests and smoke runs on a CPU.
_base_ = ['./upernet_replknet_tiny_synthetic_ade20k.py']
dataset_type = 'CityscapesDataset'
data_root = 'data/synthetic_cityscapes'
crop_size = (128, 128)
model = dict(decode_head=dict(num_classes=19), auxiliary_head=dict(num_classes=19))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 128), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(
    type=dataset_type, data_root=data_root, pipeline=train_pipeline,
    data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train')))
val_dataloader = dict(dataset=dict(
    type=dataset_type, data_root=data_root, pipeline=test_pipeline,
    data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val')))
test_dataloader = val_dataloader
