"""Detection end to end, as a user runs it: the tiny RepLKNet Cascade Mask R-CNN trained, tested and
resumed through tools/*.py in subprocesses, mmdet's own train.py on a replk_mm config, and every
detection config built at full size.
"""
import json
import re
import shutil
from pathlib import Path

import mmdet
import mmengine
import pytest

from replk_mm import safe_load
from replk_mm.data import make_coco

from .helpers import PROJECT_ROOT, check, printed_metric, run_tool

pytestmark = pytest.mark.slow

TINY_CONFIG = PROJECT_ROOT / 'configs' / 'cascade_mask_rcnn_replknet_tiny_synthetic_coco.py'
MMDET_TRAIN = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'train.py'
NUM_TRAIN, NUM_VAL = 8, 4
ITERS_PER_EPOCH = 4  # the 7 training images with objects (the empty one is filtered out), batch 2
EPOCHS = 2  # the tiny config's max_epochs
# The paper's detection configs: (pretrained file, drop path, published parameter count, to match within 0.3%:
# 31B 0.05%, XL 0.03%, 31L 0.27% off).
FULL_CONFIGS = {
    'cascade_mask_rcnn_replknet31b_coco.py': ('RepLKNet-31B_ImageNet-1K_224.pth', 0.6, 137e6),
    'cascade_mask_rcnn_replknet31b_22k_coco.py': ('RepLKNet-31B_ImageNet-22K_224.pth', 0.4, 137e6),
    'cascade_mask_rcnn_replknet31l_22k_coco.py': ('RepLKNet-31L_ImageNet-22K_384.pth', 0.7, 229e6),
    'cascade_mask_rcnn_replknetxl_coco.py': ('RepLKNet-XL_MegData73M_pretrain.pth', 0.5, 392e6),
}


def run(*args, cwd=PROJECT_ROOT):
    """``run_tool`` with one OpenMP thread unless the caller set one: these models are tiny, and on a
    loaded 2-core machine OpenMP's spin-waiting made the training runs 3-4x slower (measured) with two.
    """
    return run_tool(args, cwd=cwd)


def data_options(root):
    """--cfg-options pointing every dataset and evaluator at the synthetic set under ``root``."""
    root = f'{root}/'
    ann_file = f'{root}annotations/instances_val2017.json'
    return [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')] + [
        f'val_evaluator.ann_file={ann_file}', f'test_evaluator.ann_file={ann_file}']


def train_losses(work_dir):
    """The logged total training losses, in order, from mmengine's scalars.json."""
    (scalars, ) = Path(work_dir).glob('*/vis_data/scalars.json')
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    return [record['loss'] for record in records if 'loss' in record]


def train_epochs_logged(output):
    return {int(e) for e in re.findall(r'Epoch\(train\)\s+\[(\d+)\]', output)}


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    return make_coco(tmp_path_factory.mktemp('synthetic_coco'), num_train=NUM_TRAIN, num_val=NUM_VAL)


@pytest.fixture(scope='module')
def trained(coco_root, tmp_path_factory):
    """Work dir of the tiny config trained by tools/train.py: EPOCHS x ITERS_PER_EPOCH iterations."""
    work_dir = tmp_path_factory.mktemp('train')
    output = check(run('tools/train.py', TINY_CONFIG, '--work-dir', work_dir, '--cfg-options',
                       *data_options(coco_root)))
    assert train_epochs_logged(output) == set(range(1, EPOCHS + 1))
    return work_dir


def test_train(trained):
    checkpoint = safe_load(trained / f'epoch_{EPOCHS}.pth')
    assert (checkpoint['meta']['epoch'], checkpoint['meta']['iter']) == (EPOCHS, EPOCHS * ITERS_PER_EPOCH)
    assert checkpoint['meta']['dataset_meta']['classes'] == ('person', 'bicycle', 'car')
    state = checkpoint['state_dict']
    assert state['backbone.stages.0.blocks.0.large_kernel.lkb_origin.conv.weight'].shape == (16, 1, 31, 31)
    assert state['roi_head.bbox_head.2.fc_cls.weight'].shape[0] == 3 + 1  # 3 classes + background
    losses = train_losses(trained)
    assert len(losses) == EPOCHS * ITERS_PER_EPOCH // 2  # logged every 2 iterations
    assert losses[-1] < 0.9 * losses[0], losses


def test_test_prints_coco_bbox_and_segm_ap(trained, coco_root, tmp_path):
    out = tmp_path / 'results.pkl'
    output = check(run('tools/test.py', TINY_CONFIG, trained / f'epoch_{EPOCHS}.pth', '--work-dir', tmp_path,
                       '--out', out, '--cfg-options', *data_options(coco_root)))
    assert 'Evaluate annotation type *segm*' in output  # pycocotools' own COCOeval ran
    results = mmengine.load(str(out))
    # The printed box AP equals pycocotools' COCOeval run here on the dumped predictions.
    assert printed_metric(output, 'coco/bbox_mAP') == round(coco_box_ap(coco_root, results), 3)
    assert 0.0 <= printed_metric(output, 'coco/segm_mAP') <= 1.0
    assert len(results) == NUM_VAL  # the empty validation image is evaluated too
    for result in results:
        pred = result['pred_instances']
        assert len(pred['bboxes']) == len(pred['scores']) == len(pred['labels']) == len(pred['masks']) > 0
        assert set(pred['labels'].tolist()) <= {0, 1, 2}


def coco_box_ap(coco_root, results):
    """COCO box AP@[.5:.95] of mmdet's dumped predictions, evaluated independently of mmdet."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gt = COCO(str(Path(coco_root) / 'annotations' / 'instances_val2017.json'))
    category_ids = sorted(gt.getCatIds())
    detections = []
    for result in results:
        pred = result['pred_instances']
        for (x1, y1, x2, y2), score, label in zip(pred['bboxes'].tolist(), pred['scores'].tolist(),
                                                  pred['labels'].tolist()):
            detections.append(dict(image_id=result['img_id'], category_id=category_ids[label],
                                   bbox=[x1, y1, x2 - x1, y2 - y1], score=score))
    evaluator = COCOeval(gt, gt.loadRes(detections), 'bbox')
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[0])


def test_resume(trained, coco_root, tmp_path):
    """--resume continues the copied run from its last checkpoint (epoch EPOCHS) to one more epoch."""
    work_dir = tmp_path / 'work'
    shutil.copytree(trained, work_dir)
    output = check(run('tools/train.py', TINY_CONFIG, '--work-dir', work_dir, '--resume', '--cfg-options',
                       *data_options(coco_root), f'train_cfg.max_epochs={EPOCHS + 1}'))
    assert f'resumed epoch: {EPOCHS}, iter: {EPOCHS * ITERS_PER_EPOCH}' in output
    assert train_epochs_logged(output) == {EPOCHS + 1}
    meta = safe_load(work_dir / f'epoch_{EPOCHS + 1}.pth')['meta']
    assert (meta['epoch'], meta['iter']) == (EPOCHS + 1, (EPOCHS + 1) * ITERS_PER_EPOCH)


def test_mmdet_train_tool_trains_replk_config(coco_root, tmp_path):
    """mmdet's own tools/train.py knows nothing of replk_mm: the config's custom_imports registers it."""
    check(run(MMDET_TRAIN, TINY_CONFIG.relative_to(PROJECT_ROOT), '--work-dir', tmp_path, '--cfg-options',
              *data_options(coco_root), 'train_cfg.max_epochs=1'))
    checkpoint = safe_load(tmp_path / 'epoch_1.pth')
    assert checkpoint['meta']['iter'] == ITERS_PER_EPOCH
    assert 'backbone.stages.3.blocks.0.large_kernel.small_conv.conv.weight' in checkpoint['state_dict']


def test_missing_pretrained_stops_early(coco_root, tmp_path):
    """Run from an empty directory: no checkpoints/ there, so training must stop before building anything."""
    config = PROJECT_ROOT / 'configs' / 'cascade_mask_rcnn_replknet31b_coco.py'
    proc = run(PROJECT_ROOT / 'tools' / 'train.py', config, '--cfg-options', *data_options(coco_root), cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-4000:]
    assert 'error: pretrained checkpoint not found: checkpoints/RepLKNet-31B_ImageNet-1K_224.pth' in proc.stderr
    assert 'model.backbone.init_cfg' in proc.stderr
    assert not (tmp_path / 'work_dirs').exists()


@pytest.mark.parametrize('config', sorted(p.name for p in (PROJECT_ROOT / 'configs').glob('cascade_mask_rcnn_*.py')))
def test_config_builds(config):
    from mmdet.models.losses import GIoULoss
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(PROJECT_ROOT / 'configs' / config)
    assert cfg.custom_imports.imports == ['replk_mm', 'replk_mm.models.mixed_precision']
    if config in FULL_CONFIGS:
        pretrained, drop_path, _ = FULL_CONFIGS[config]
        assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=f'checkpoints/{pretrained}')
        assert cfg.model.backbone.drop_path_rate == drop_path
        xl = 'replknetxl' in config  # stage norms and inputs scaled as in its MegData-73M pretraining
        assert cfg.model.backbone.get('norm_intermediate_features', False) == xl
        assert cfg.model.data_preprocessor.std == ([127.5] * 3 if xl else [58.395, 57.12, 57.375])
        assert cfg.train_cfg.max_epochs == 36
        assert [s.get('milestones') for s in cfg.param_scheduler] == [None, [27, 33]]
        assert cfg.optim_wrapper.optimizer.lr == 4e-4 and cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0
        assert cfg.train_dataloader.batch_size == (4 if xl else 1)
        assert cfg.auto_scale_lr.base_batch_size == cfg.train_dataloader.batch_size * 8
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'CascadeRCNN' and type(model.backbone).__name__ == 'RepLKNet'
    assert len(model.roi_head.bbox_head) == 3
    for head in model.roi_head.bbox_head:
        assert (head.num_shared_convs, head.num_shared_fcs) == (4, 1)
        assert head.reg_decoded_bbox and isinstance(head.loss_bbox, GIoULoss)
    assert model.neck.out_channels == (32 if 'tiny' in config else 256)
    if config in FULL_CONFIGS:
        params = sum(p.numel() for p in model.parameters())
        assert abs(params / FULL_CONFIGS[config][2] - 1) < 0.003, params
