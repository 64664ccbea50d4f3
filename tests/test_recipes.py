"""Each paper config's effective recipe, pinned to the official release (DingXiaoH/RepLKNet-pytorch,
``segmentation/configs/`` and ``detection/configs/``, mmseg 0.x / mmdet 2.x).

The tables below hold the official values, each with the file it was read from. Budgets are compared in
images, not iterations: these configs use mmseg's and mmdet's usual 8 GPUs where the official runs used other
layouts, so the iterations differ and the images seen, the warm-up in images and the lr must not.
Configs are only read (mmengine's Config), nothing is imported or built.
"""
from pathlib import Path

import pytest
from mmengine.config import Config

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'
GPUS = 8  # the layout every config here is written for (each header says so)
SEG = 'segmentation/configs/'
DET = 'detection/configs/'

# mmseg 0.x's Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0)) is mmseg 1.x's RandomResize with the same
# scale and ratio range; the 640 files change only the crop. Official layouts: the 31B files' comment "we used
# 8 nodes each with 8 GPUs" with samples_per_gpu=2; 31L the same nodes with samples_per_gpu=1; XL "2 nodes (A100)
# each with 8 GPUs", samples_per_gpu=2; Cityscapes "4 nodes each with 8 GPUs" with cityscapes_769x769's 2 per GPU.
ADE20K_640 = dict(crop=(640, 640), train_scale=(2048, 512), ratio_range=(0.5, 2.0), test_scale=(2048, 512),
                  test_mode='slide', slide_stride=(426, 426), align_corners=False, lr=2e-4, with_cp=True)
SEGMENTATION = {
    'upernet_replknet31b_ade20k.py': dict(
        official=SEG + 'RepLKNet-31B_1Kpretrain_upernet_160k_ade20k_512.py',
        iters=40000, gpus=64, per_gpu=2, warmup_iters=400, crop=(512, 512), train_scale=(2048, 512),
        ratio_range=(0.5, 2.0), test_scale=(2048, 512), test_mode='whole', align_corners=False, lr=2e-4,
        drop_path=0.5, with_cp=True),
    'upernet_replknet31b_22k_ade20k_640.py': dict(
        ADE20K_640, official=SEG + 'RepLKNet-31B_22Kpretrain_upernet_160k_ade20k_640.py',
        iters=40000, gpus=64, per_gpu=2, warmup_iters=400, drop_path=0.3),
    'upernet_replknet31l_22k_ade20k_640.py': dict(
        ADE20K_640, official=SEG + 'RepLKNet-31L_22Kpretrain_upernet_160k_ade20k_640.py',
        iters=80000, gpus=64, per_gpu=1, warmup_iters=800, drop_path=0.3),
    # The official file trains on its test pipeline by mistake; its defined train_pipeline is the intent.
    'upernet_replknetxl_ade20k_640.py': dict(
        ADE20K_640, official=SEG + 'RepLKNet-XL_MegData73M_upernet_160k_ade20k_640.py',
        iters=160000, gpus=16, per_gpu=2, warmup_iters=1500, drop_path=0.5),
    'upernet_replknet31b_cityscapes.py': dict(
        official=SEG + 'RepLKNet-31B_1Kpretrain_upernet_80k_cityscapes_769.py',
        iters=20000, gpus=32, per_gpu=2, warmup_iters=400, crop=(769, 769), train_scale=(2049, 1025),
        ratio_range=(0.5, 2.0), test_scale=(2049, 1025), test_mode='whole', align_corners=True, lr=2e-4,
        drop_path=0.5, with_cp=True),
}
ADE20K_IMAGES = 5_120_000  # the paper's budget for every ADE20K model

# mmdet 2.x; the files state images per GPU but not the GPU count. Scales as (long, short) side limits.
CASCADE_SCALES = {(1333, short) for short in range(480, 801, 32)}
CASCADE = dict(epochs=36, milestones=[27, 33], warmup=('LinearLR', 500, 0.001), lr=4e-4, with_cp=True,
               train_scales=CASCADE_SCALES | {(1333, 400), (1333, 500), (1333, 600)}, crop=(384, 600),
               test_scale=(1333, 800), grad_clip=None)
DETECTION = {
    'cascade_mask_rcnn_replknet31b_coco.py': dict(
        CASCADE, official=DET + 'RepLKNet-31B_1Kpretrain_cascade_mask_rcnn_3x_coco.py', per_gpu=1, drop_path=0.6),
    'cascade_mask_rcnn_replknet31b_22k_coco.py': dict(
        CASCADE, official=DET + 'RepLKNet-31B_22Kpretrain_cascade_mask_rcnn_3x_coco.py', per_gpu=1, drop_path=0.4),
    'cascade_mask_rcnn_replknet31l_22k_coco.py': dict(
        CASCADE, official=DET + 'RepLKNet-31L_cascade_mask_rcnn_3x_coco.py', per_gpu=1, drop_path=0.7),
    'cascade_mask_rcnn_replknetxl_coco.py': dict(
        CASCADE, official=DET + 'RepLKNet-XL_MegData73Mpretrain_cascade_mask_rcnn_3x_coco.py', per_gpu=4,
        drop_path=0.5),
    # lr_config: step [16, 22], warmup 'constant' 500 iterations at ratio 1/3; grad_clip max_norm 35.
    'fcos_replknet31b_coco.py': dict(
        official=DET + 'RepLKNet-31B_1Kpretrain_fcos_2x_coco.py', epochs=24, milestones=[16, 22],
        warmup=('ConstantLR', 500, 1 / 3), lr=2e-4, with_cp=True, train_scales={(1333, 640), (1333, 800)},
        crop=None, test_scale=(1333, 800), grad_clip=35, per_gpu=2, drop_path=0.5),
}


# Gradient checkpointing changes memory and speed, not results: these configs turn off the official
# use_checkpoint=True because their memory without it was measured on a GPU (docs/benchmarks.md).
CHECKPOINTING_OFF = {'upernet_replknet31b_ade20k.py', 'upernet_replknet31b_cityscapes.py',
                     'cascade_mask_rcnn_replknet31b_coco.py', 'cascade_mask_rcnn_replknet31b_22k_coco.py'}


def load(name):
    """The config as data: its custom_imports (replk_mm and what it imports) are not needed to read a recipe."""
    return Config.fromfile(CONFIG_DIR / name, import_custom_modules=False)


def transforms(pipeline, type_name):
    """Every transform of ``type_name`` in a pipeline, inside RandomChoice branches too."""
    found = []
    for step in pipeline:
        if isinstance(step, (list, tuple)):
            found += transforms(step, type_name)
        elif step['type'] == type_name:
            found.append(step)
        elif step['type'] == 'RandomChoice':
            found += transforms(step['transforms'], type_name)
    return found


def only(pipeline, type_name):
    (step, ) = transforms(pipeline, type_name)
    return step


def side_limits(scale):
    """A keep-ratio scale as (long, short) side limits: mmdet 2.x wrote (480, 1333), mmdet 3.x (1333, 480)."""
    return max(scale), min(scale)


def check_header(name, official, per_gpu):
    """The header comment names the official file and the batch layout."""
    text = (CONFIG_DIR / name).read_text()
    assert Path(official).name in text, f'{name}: header must name {official}'
    assert f'global batch {GPUS * per_gpu} = {GPUS} gpus x {per_gpu} image' in text.lower(), name


def test_every_paper_config_is_pinned():
    paper_configs = {p.name for p in CONFIG_DIR.glob('*.py') if '_tiny_' not in p.name}
    assert paper_configs == set(SEGMENTATION) | set(DETECTION)


@pytest.mark.parametrize('name', sorted(SEGMENTATION))
def test_segmentation_recipe(name):
    official = SEGMENTATION[name]
    cfg = load(name)
    batch = cfg.train_dataloader.batch_size
    official_batch = official['gpus'] * official['per_gpu']
    check_header(name, official['official'], batch)

    # Budget: the same images seen and the same warm-up in images as the official run.
    max_iters = cfg.train_cfg.max_iters
    assert max_iters * GPUS * batch == official['iters'] * official_batch
    if 'ade20k' in name:
        assert max_iters * GPUS * batch == ADE20K_IMAGES
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.begin, warmup.by_epoch) == ('LinearLR', 1e-6, 0, False)
    assert warmup.end * GPUS * batch == official['warmup_iters'] * official_batch
    assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end) == ('PolyLR', 1.0, 0.0, warmup.end, max_iters)

    # The lr as published, not scaled; base_batch_size is the batch of the run it was published with.
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.betas, optimizer.weight_decay) == (
        'AdamW', official['lr'], (0.9, 0.999), 0.05)
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=official_batch)

    # Data: training resize and crop, test scale and mode.
    train_pipeline = cfg.train_dataloader.dataset.pipeline
    resize = only(train_pipeline, 'RandomResize')
    assert (tuple(resize.scale), tuple(resize.ratio_range), resize.keep_ratio) == (
        official['train_scale'], official['ratio_range'], True)
    crop = only(train_pipeline, 'RandomCrop')
    assert (tuple(crop.crop_size), crop.cat_max_ratio) == (official['crop'], 0.75)
    assert tuple(cfg.model.data_preprocessor.size) == official['crop']
    assert transforms(train_pipeline, 'RandomFlip') and transforms(train_pipeline, 'PhotoMetricDistortion')
    test_resize = only(cfg.test_dataloader.dataset.pipeline, 'Resize')
    assert (tuple(test_resize.scale), test_resize.keep_ratio) == (official['test_scale'], True)
    test_cfg = cfg.model.test_cfg
    assert test_cfg.mode == official['test_mode']
    if test_cfg.mode == 'slide':
        assert (tuple(test_cfg.crop_size), tuple(test_cfg.stride)) == (official['crop'], official['slide_stride'])

    # Model: heads, drop path, gradient checkpointing.
    assert cfg.model.decode_head.align_corners == cfg.model.auxiliary_head.align_corners == official['align_corners']
    assert cfg.model.backbone.drop_path_rate == official['drop_path']
    assert cfg.model.backbone.with_cp == (official['with_cp'] and name not in CHECKPOINTING_OFF)


@pytest.mark.parametrize('name', sorted(DETECTION))
def test_detection_recipe(name):
    official = DETECTION[name]
    cfg = load(name)
    batch = cfg.train_dataloader.batch_size
    assert batch == official['per_gpu']
    check_header(name, official['official'], batch)

    # Budget in epochs, so the images seen do not depend on the GPU count the official files leave out.
    assert cfg.train_cfg.max_epochs == official['epochs']
    warmup, steps = cfg.param_scheduler
    warmup_type, warmup_iters, warmup_factor = official['warmup']
    factor = warmup.start_factor if warmup_type == 'LinearLR' else warmup.factor
    assert (warmup.type, warmup.begin, warmup.end, warmup.by_epoch) == (warmup_type, 0, warmup_iters, False)
    assert factor == pytest.approx(warmup_factor)
    assert (steps.type, steps.milestones, steps.gamma, steps.end, steps.by_epoch) == (
        'MultiStepLR', official['milestones'], 0.1, official['epochs'], True)

    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.betas, optimizer.weight_decay) == (
        'AdamW', official['lr'], (0.9, 0.999), 0.05)
    assert set(optimizer) == {'type', 'lr', 'betas', 'weight_decay'}  # nothing left over from SGD bases
    assert cfg.optim_wrapper.paramwise_cfg == dict(norm_decay_mult=0.0)
    max_norm = official['grad_clip']
    assert cfg.optim_wrapper.get('clip_grad') == (max_norm and dict(max_norm=max_norm, norm_type=2))
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=GPUS * batch)

    train_pipeline = cfg.train_dataloader.dataset.pipeline
    scales = {side_limits(scale) for step in transforms(train_pipeline, 'RandomChoiceResize')
              for scale in step.scales}
    assert scales == official['train_scales']
    assert all(step.keep_ratio for step in transforms(train_pipeline, 'RandomChoiceResize'))
    crops = transforms(train_pipeline, 'RandomCrop')
    assert [tuple(c.crop_size) for c in crops] == ([official['crop']] if official['crop'] else [])
    assert only(train_pipeline, 'RandomFlip').prob == 0.5
    test_resize = only(cfg.test_dataloader.dataset.pipeline, 'Resize')
    assert side_limits(test_resize.scale) == official['test_scale'] and test_resize.keep_ratio

    assert cfg.model.backbone.drop_path_rate == official['drop_path']
    assert cfg.model.backbone.with_cp == (official['with_cp'] and name not in CHECKPOINTING_OFF)
