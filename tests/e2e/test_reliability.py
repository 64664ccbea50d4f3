"""Interrupted training loses nothing; bad input gets a clear error; untrusted files never run code."""
import builtins
import json
import os
import re
import subprocess
import sys
import textwrap

import cv2
import pytest
import torch

from replk_mm.checkpoint import safe_load
from replk_mm.data import make_ade20k

from .helpers import PROJECT_ROOT, check, printed_metric, run_tool

pytestmark = pytest.mark.slow
CONFIG = PROJECT_ROOT / 'configs' / 'upernet_replknet_tiny_synthetic_ade20k.py'


def options(root, iters, interval=2, keep=-1, extra=()):
    return ['--cfg-options', *(f'{loader}.dataset.data_root={root}' for loader in
                               ('train_dataloader', 'val_dataloader', 'test_dataloader')),
            'train_dataloader.batch_size=2', f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={interval}', f'default_hooks.checkpoint.max_keep_ckpts={keep}',
            'default_hooks.logger.interval=1', 'randomness.deterministic=True', *extra]


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    return make_ade20k(tmp_path_factory.mktemp('ade'), num_train=8, num_val=4)


@pytest.fixture(scope='module')
def uninterrupted(ade_root, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('uninterrupted')
    check(run_tool(['tools/train.py', CONFIG, '--work-dir', work_dir, *options(ade_root, 6)]))
    return work_dir


# Runs tools/train.py, but the KILL_AT-th checkpoint write stops halfway with SIGKILL.
KILLER = textwrap.dedent('''
    import os, runpy, signal, sys
    from mmengine.fileio import LocalBackend
    real_put, writes = LocalBackend.put, []

    def dying_put(self, obj, filepath):
        if str(filepath).endswith('.pth') or str(filepath).endswith('.pth.tmp'):
            writes.append(filepath)
            if len(writes) == int(os.environ['KILL_AT']):
                with open(filepath, 'wb') as f:
                    f.write(obj[:len(obj) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return real_put(self, obj, filepath)

    LocalBackend.put = dying_put
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name='__main__')
''')


def learning_rates(work_dir):
    """{iteration: lr} from the scalars mmengine logs every iteration (over every run in work_dir)."""
    rates = {}
    for scalars in sorted(work_dir.glob('*/vis_data/scalars.json')):
        rows = [json.loads(line) for line in scalars.read_text().splitlines()]
        rates.update({row['iter']: row['lr'] for row in rows if 'lr' in row})
    return rates


def test_sigkill_while_writing_a_checkpoint_then_resume_matches_uninterrupted(ade_root, uninterrupted, tmp_path):
    work_dir = tmp_path / 'killed'
    killed = run_tool(['-c', KILLER, 'tools/train.py', CONFIG, '--work-dir', work_dir,
                       *options(ade_root, 6, keep=1)], env={'KILL_AT': '3'})
    assert killed.returncode == -9, killed.stderr[-3000:]
    # Killed halfway through writing iter_6: the half file is not what resume will read.
    assert (work_dir / 'iter_6.pth.tmp').is_file() and not (work_dir / 'iter_6.pth').exists()
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('iter_4.pth')
    assert safe_load(work_dir / 'iter_4.pth')['meta']['iter'] == 4

    output = check(run_tool(['tools/train.py', CONFIG, '--work-dir', work_dir, '--resume',
                             *options(ade_root, 6, keep=1)]))
    assert 'resumed epoch: 0, iter: 4' in output
    resumed = safe_load(work_dir / 'iter_6.pth')
    reference = safe_load(uninterrupted / 'iter_6.pth')
    # Same optimizer state, LR schedule and weights as the run that was never interrupted.
    assert resumed['param_schedulers'] == reference['param_schedulers']
    assert resumed['optimizer']['param_groups'][0]['lr'] == reference['optimizer']['param_groups'][0]['lr']
    for key, value in reference['state_dict'].items():
        torch.testing.assert_close(resumed['state_dict'][key], value, rtol=0, atol=0, msg=key)
    lrs, reference_lrs = learning_rates(work_dir), learning_rates(uninterrupted)
    assert [lrs[i] for i in (5, 6)] == [reference_lrs[i] for i in (5, 6)]


def test_non_finite_loss_stops_with_the_iteration_and_keeps_the_last_good_checkpoint(ade_root, tmp_path):
    work_dir = tmp_path / 'nan'
    check(run_tool(['tools/train.py', CONFIG, '--work-dir', work_dir, *options(ade_root, 2)]))
    result = run_tool(['tools/train.py', CONFIG, '--work-dir', work_dir, '--resume',
                       *options(ade_root, 4, extra=['model.decode_head.loss_decode.loss_weight=nan'])])
    assert result.returncode != 0
    assert re.search(r'the loss became nan at iteration 3; .*Last good checkpoint: \S*iter_2\.pth', result.stderr)
    assert not (work_dir / 'iter_4.pth').exists()
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('iter_2.pth')
    assert torch.isfinite(safe_load(work_dir / 'iter_2.pth')['state_dict']['decode_head.conv_seg.weight']).all()


@pytest.mark.parametrize('override, message', [
    ('train_dataloader.dataset.data_root=/nonexistent/ade',
     'train_dataloader.dataset.data_root: directory not found: /nonexistent/ade'),
    ('model.backbone.nonexistent.depth=3', "has no key 'nonexistent' under model.backbone"),
    ('model.bakcbone.type=RepLKNet', "has no key 'bakcbone' under model"),
    ('train_dataloader.batch_size=two', "train_dataloader.batch_size='two': expected int"),
])
def test_bad_config_and_paths_fail_before_training(ade_root, tmp_path, override, message):
    result = run_tool(['tools/train.py', CONFIG, '--work-dir', tmp_path / 'work', *options(ade_root, 2),
                       override])
    assert result.returncode != 0
    assert message in result.stderr
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'work').exists()


def corrupt_copy(ade_root, tmp_path, corrupt):
    """A copy of the dataset with one file damaged by ``corrupt(images_dir, labels_dir)``."""
    import shutil
    root = tmp_path / 'ade'
    shutil.copytree(ade_root, root)
    return root, corrupt(root / 'images' / 'training', root / 'annotations' / 'training')


def test_truncated_image_names_the_file(ade_root, tmp_path):
    def truncate(images, labels):
        path = sorted(images.iterdir())[0]
        path.write_bytes(path.read_bytes()[:64])
        return path
    root, broken = corrupt_copy(ade_root, tmp_path, truncate)
    result = run_tool(['tools/train.py', CONFIG, '--work-dir', tmp_path / 'work', *options(root, 8)])
    assert result.returncode != 0
    assert str(broken.name) in result.stderr


def test_label_values_outside_the_classes_name_the_file(ade_root, tmp_path):
    def out_of_range(images, labels):
        path = sorted(labels.iterdir())[0]
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        label[:, :64] = 200
        cv2.imwrite(str(path), label)
        return path
    root, broken = corrupt_copy(ade_root, tmp_path, out_of_range)
    result = run_tool(['tools/train.py', CONFIG, '--work-dir', tmp_path / 'work', *options(root, 8),
                       'train_dataloader.sampler.shuffle=False'])
    assert result.returncode != 0
    assert re.search(rf'label file \S*{broken.name} has values \[199\] outside the 150 classes', result.stderr)


def test_test_tool_refuses_wrong_arch_and_truncated_checkpoints(ade_root, uninterrupted, tmp_path):
    wrong = run_tool(['tools/test.py', CONFIG, uninterrupted / 'iter_6.pth', '--work-dir', tmp_path,
                      *options(ade_root, 2)[:4], 'model.backbone.arch.channels=[24,32,64,128]'])
    assert wrong.returncode != 0
    assert re.search(r'iter_6\.pth does not fit the model of \S+: first mismatch at backbone\.stem\.0\.conv\.weight: '
                     r'checkpoint \(16, 3, 3, 3\) vs model \(24, 3, 3, 3\)', wrong.stderr)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes((uninterrupted / 'iter_6.pth').read_bytes()[:5000])
    result = run_tool(['tools/test.py', CONFIG, truncated, '--work-dir', tmp_path, *options(ade_root, 2)[:4]])
    assert result.returncode != 0
    assert f'could not load checkpoint {truncated}' in result.stderr


def test_any_input_size_segments_to_the_input_size():
    import mmseg.models  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(CONFIG)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        (result, ) = model.predict(torch.randn(1, 3, 225, 300))
    assert result.pred_sem_seg.data.shape == (1, 225, 300)
    assert result.seg_logits.data.shape == (150, 225, 300)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, 'w')


def test_code_running_checkpoints_are_refused_by_every_tool(ade_root, uninterrupted, tmp_path):
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    checkpoint = safe_load(uninterrupted / 'iter_6.pth')
    checkpoint['meta']['payload'] = Payload(str(marker))
    torch.save(checkpoint, evil)
    base = options(ade_root, 8)
    pretrained_config = tmp_path / 'pretrained_from_evil.py'
    pretrained_config.write_text(f"_base_ = ['{CONFIG}']\n"
                                 f"model = dict(backbone=dict(init_cfg=dict(\n"
                                 f"    _delete_=True, type='Pretrained', checkpoint='{evil}')))\n")
    runs = {
        'test.py': ['tools/test.py', CONFIG, evil, '--work-dir', tmp_path / 't', *base[:4]],
        '--resume': ['tools/train.py', CONFIG, '--work-dir', tmp_path / 'r', '--resume', evil, *base],
        'load_from': ['tools/train.py', CONFIG, '--work-dir', tmp_path / 'l', *base, f'load_from={evil}'],
        'Pretrained': ['tools/train.py', pretrained_config, '--work-dir', tmp_path / 'p', *base],
    }
    for name, args in runs.items():
        result = run_tool(args)
        assert result.returncode != 0, name
        assert 'weights_only' in result.stderr or 'Unsupported global' in result.stderr, (name, result.stderr[-2000:])
        assert not marker.exists(), name


def test_two_process_cpu_training_evaluates_like_one_process(ade_root, tmp_path):
    work_dir = tmp_path / 'dist'
    env = dict(os.environ, PYTHON=sys.executable, PORT='29533', OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    result = subprocess.run(['bash', 'tools/dist_train.sh', str(CONFIG), '2', '--work-dir', str(work_dir),
                             *map(str, options(ade_root, 2))], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=600, env=env)
    output = check(result)
    assert 'Distributed launcher: pytorch' in output or 'distributed: True' in output
    distributed_miou = float(re.findall(r'Iter\(val\) \[\d+/\d+\]\s+aAcc: \S+\s+mIoU: (\S+)', output)[-1])
    single = check(run_tool(['tools/test.py', CONFIG, work_dir / 'iter_2.pth', '--work-dir', tmp_path / 'single',
                             *options(ade_root, 2)[:4]]))
    assert printed_metric(single, 'mIoU') == pytest.approx(distributed_miou, abs=0.01)
