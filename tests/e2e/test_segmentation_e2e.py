"""UperNet-RepLKNet end to end through tools/train.py and tools/test.py on synthetic data."""
import re
from pathlib import Path

import cv2
import pytest

from replk_mm.checkpoint import safe_load
from replk_mm.data import make_ade20k, make_cityscapes

from .helpers import PROJECT_ROOT, check, mean_iou_percent, printed_metric, run_tool

pytestmark = pytest.mark.slow
ADE_CONFIG = PROJECT_ROOT / 'configs' / 'upernet_replknet_tiny_synthetic_ade20k.py'
CITYSCAPES_CONFIG = PROJECT_ROOT / 'configs' / 'upernet_replknet_tiny_synthetic_cityscapes.py'


def data_options(root, iters, interval=2, batch_size=2):
    return ['--cfg-options', f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}', f'train_dataloader.batch_size={batch_size}',
            f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={interval}', 'default_hooks.logger.interval=1']


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    return make_ade20k(tmp_path_factory.mktemp('ade') / 'ADEChallengeData2016', num_train=8, num_val=4)


@pytest.fixture(scope='module')
def trained(ade_root, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('ade_work')
    output = check(run_tool(['tools/train.py', ADE_CONFIG, '--work-dir', work_dir, *data_options(ade_root, 4)]))
    return work_dir, output


def test_train_writes_checkpoints_and_validates(trained):
    work_dir, output = trained
    assert (work_dir / 'iter_4.pth').is_file()
    assert Path((work_dir / 'last_checkpoint').read_text().strip()).name == 'iter_4.pth'
    assert 'Iter(train) [4/4]' in output and 'mIoU' in output
    checkpoint = safe_load(work_dir / 'iter_4.pth')
    assert checkpoint['meta']['iter'] == 4
    assert any(k.startswith('backbone.stages.0.blocks.0.large_kernel.lkb_origin') for k in checkpoint['state_dict'])


def test_test_tool_prints_miou_and_per_class_iou(trained, ade_root, tmp_path):
    work_dir, _ = trained
    output = check(run_tool(['tools/test.py', ADE_CONFIG, work_dir / 'iter_4.pth', '--work-dir', work_dir / 'test',
                             '--out', tmp_path / 'pred',
                             '--cfg-options', f'test_dataloader.dataset.data_root={ade_root}']))
    # The printed mIoU equals one computed here from the written predictions and the annotation files. ADE's
    # files use 0 for "unlabelled" and 1..150 for classes, in the predictions too (mmseg adds the 1 back).
    gt_dir = Path(ade_root) / 'annotations' / 'validation'
    pairs = [(pred, gt_dir / pred.name) for pred in sorted((tmp_path / 'pred').glob('*.png'))]
    assert len(pairs) == 4
    assert printed_metric(output, 'mIoU') == pytest.approx(mean_iou_percent(pairs, 151, ignore_index=0), abs=0.011)
    assert 'per class results' in output and re.search(r'\|\s+wall\s+\|', output)


def test_test_tool_out_show_dir_and_tta(trained, ade_root, tmp_path):
    work_dir, _ = trained
    output = check(run_tool(['tools/test.py', ADE_CONFIG, work_dir / 'iter_4.pth', '--work-dir', tmp_path / 'work',
                             '--out', tmp_path / 'pred', '--show-dir', tmp_path / 'show', '--tta',
                             # mmseg's visualisation hook reads runner.iter, which builds the training
                             # loop and its dataset: that one needs the data too
                             *data_options(ade_root, 4)[:4]]))
    predictions = sorted((tmp_path / 'pred').glob('*.png'))
    assert [p.stem for p in predictions] == [f'ADE_val_{i:08d}' for i in range(1, 5)]
    pairs = [(pred, Path(ade_root) / 'annotations' / 'validation' / pred.name) for pred in predictions]
    assert printed_metric(output, 'mIoU') == pytest.approx(mean_iou_percent(pairs, 151, ignore_index=0), abs=0.011)
    label = cv2.imread(str(predictions[0]), cv2.IMREAD_UNCHANGED)
    assert label.shape == (128, 128) and label.max() < 150
    assert len(list((tmp_path / 'show').rglob('*.png'))) == 4


def test_resume_continues_at_the_next_iteration(trained, ade_root):
    work_dir, _ = trained
    output = check(run_tool(['tools/train.py', ADE_CONFIG, '--work-dir', work_dir, '--resume',
                             *data_options(ade_root, 6)]))
    assert 'resumed epoch: 0, iter: 4' in output
    assert 'Iter(train) [5/6]' in output and 'Iter(train) [1/6]' not in output
    assert safe_load(work_dir / 'iter_6.pth')['meta']['iter'] == 6


def test_mmseg_own_train_tool_runs_a_replk_mm_config(ade_root, tmp_path):
    import mmseg
    mmseg_train = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'train.py'
    work_dir = tmp_path / 'mmseg_tool'
    check(run_tool([mmseg_train, ADE_CONFIG, '--work-dir', work_dir, *data_options(ade_root, 2)]))
    assert (work_dir / 'iter_2.pth').is_file()


def test_cityscapes_format_trains_and_tests(tmp_path):
    root = make_cityscapes(tmp_path / 'cityscapes', num_train=4, num_val=2)
    work_dir = tmp_path / 'work'
    check(run_tool(['tools/train.py', CITYSCAPES_CONFIG, '--work-dir', work_dir, *data_options(root, 2)]))
    output = check(run_tool(['tools/test.py', CITYSCAPES_CONFIG, work_dir / 'iter_2.pth', '--work-dir', work_dir,
                             '--out', tmp_path / 'pred', '--cfg-options', f'test_dataloader.dataset.data_root={root}']))
    gt_files = sorted((Path(root) / 'gtFine' / 'val').rglob('*_gtFine_labelTrainIds.png'))
    pairs = [(tmp_path / 'pred' / f'{gt.name.replace("_gtFine_labelTrainIds", "_leftImg8bit")}', gt) for gt in gt_files]
    assert len(pairs) == 2 and all(pred.is_file() for pred, _ in pairs)
    assert printed_metric(output, 'mIoU') == pytest.approx(mean_iou_percent(pairs, 19, ignore_index=255), abs=0.011)
    assert re.search(r'\|\s+road\s+\|', output)  # Cityscapes class names in the per-class table


def test_missing_pretrained_file_stops_at_once_with_a_hint(tmp_path):
    result = run_tool([PROJECT_ROOT / 'tools' / 'train.py', PROJECT_ROOT / 'configs' / 'upernet_replknet31b_ade20k.py',
                       '--work-dir', tmp_path / 'work'], cwd=tmp_path)
    assert result.returncode == 2
    assert 'checkpoints/RepLKNet-31B_ImageNet-1K_224.pth' in result.stderr
    assert '--cfg-options model.backbone.init_cfg=None' in result.stderr
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'work').exists()  # nothing written
