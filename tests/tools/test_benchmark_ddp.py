"""tools/benchmark_ddp.py: scaling figures from mmengine's per-iteration log, and real 1- and 2-process runs."""
import argparse
import json
import os
import subprocess
import sys

import pytest

from replk_mm.data import make_ade20k

from conftest import PROJECT_ROOT, load_tool

ddp_tool = load_tool('benchmark_ddp')
SEG_CONFIG = PROJECT_ROOT / 'configs' / 'upernet_replknet_tiny_synthetic_ade20k.py'
DET_CONFIG = PROJECT_ROOT / 'configs' / 'cascade_mask_rcnn_replknet_tiny_synthetic_coco.py'


def rows(times):
    return [dict(iter=i, time=t, data_time=t / 10, memory=100 * i) for i, t in enumerate(times, start=1)]


def test_summary_leaves_out_the_first_iterations_and_counts_every_gpus_images():
    one = ddp_tool.summarise(rows([9.0, 0.25, 0.25, 0.30, 0.20]), gpus=1, batch_size=2, skip=1)
    two = ddp_tool.summarise(rows([5.0, 1.0, 0.30, 0.20, 0.40, 0.25]), gpus=2, batch_size=2, skip=2)
    assert one['iterations_timed'] == 4 and two['iterations_timed'] == 4
    assert one['median_iteration_s'] == pytest.approx(0.25)
    assert two['median_iteration_s'] == pytest.approx(0.275)  # median of 0.30, 0.20, 0.40, 0.25
    assert two['max_iteration_s'] == pytest.approx(0.40)
    assert two['images_per_s'] == pytest.approx(4 / 0.275)
    assert two['peak_memory_mib'] == 600
    ddp_tool.add_efficiency([one, two])
    assert one['efficiency'] == pytest.approx(1.0)
    assert two['efficiency'] == pytest.approx((4 / 0.275) / (2 * 8.0))  # 14.5 images/s against 2 x 8


def test_profile_options_build_mmengines_profiler_hook_over_the_last_three_skipped_iterations():
    """Through train.py's own reading of --cfg-options (which refuses keys under a missing parent)."""
    from mmengine.config import DictAction
    from mmengine.registry import HOOKS

    from replk_mm.apis.config import load_run_config
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    options = parser.parse_args(['--cfg-options', *ddp_tool.profile_options(skip=10)]).cfg_options
    cfg = load_run_config(str(SEG_CONFIG), options)
    hook = HOOKS.build(cfg.default_hooks.profiler)
    # The profiler closes (and exports, which takes seconds) after the 10th iteration: the last skipped one.
    assert type(hook).__name__ == 'ProfilerHook' and hook.profile_times == 10 and not hook.by_epoch
    steps = [hook.schedule(step) for step in range(10)]  # torch.profiler's actions per iteration
    assert [step.name for step in steps[5:]] == ['NONE', 'WARMUP', 'RECORD', 'RECORD', 'RECORD_AND_SAVE']
    assert hook.on_trace_ready == dict(type='log_trace', sort_by='self_cuda_time_total', row_limit=30)


def test_too_few_iterations_name_the_option():
    with pytest.raises(ValueError, match='--skip'):
        ddp_tool.summarise(rows([1.0, 1.0]), gpus=1, batch_size=2, skip=2)


def test_epoch_based_config_is_refused_before_any_run(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr('sys.argv', ['benchmark_ddp.py', str(DET_CONFIG), '--work-dir', str(tmp_path)])
    with pytest.raises(SystemExit):
        ddp_tool.main()
    assert 'train_cfg has no max_iters' in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_one_and_two_process_runs_time_every_iteration_and_write_nothing_else(tmp_path):
    root = make_ade20k(tmp_path / 'ade', num_train=8, num_val=2)
    out, work_dir = tmp_path / 'ddp.json', tmp_path / 'runs'
    roots = [f'{loader}.dataset.data_root={root}' for loader in ('train_dataloader', 'val_dataloader',
                                                                 'test_dataloader')]
    result = subprocess.run(
        [sys.executable, PROJECT_ROOT / 'tools' / 'benchmark_ddp.py', SEG_CONFIG, '--gpus', '1', '2', '--iters', '4',
         '--skip', '1', '--workers', '1', '--work-dir', work_dir, '--out', out, '--cfg-options', *roots],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'})
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())['results']
    assert [r['gpus'] for r in results] == [1, 2]
    for r in results:
        logged = ddp_tool.logged_iterations(work_dir / f"gpus{r['gpus']}")
        assert [row['iter'] for row in logged] == [1, 2, 3, 4]  # one row per iteration: a window of one
        assert r['iterations_timed'] == 3
        assert r['images_per_s'] == pytest.approx(r['gpus'] * 2 / r['median_iteration_s'])
    assert results[0]['efficiency'] == pytest.approx(1.0)
    assert 0 < results[1]['efficiency'] < 2
    assert not list(work_dir.rglob('*.pth'))  # no checkpoint written
    assert 'mIoU' not in ''.join(p.read_text() for p in work_dir.rglob('scalars.json'))  # no validation run


@pytest.mark.slow
def test_a_failing_run_is_reported_and_the_next_gpu_count_still_runs(tmp_path):
    """A run that dies (here: an arch that does not exist, on the first of two GPU counts) is listed with its exit
    code in the JSON and on exit; the other count still runs (and fails the same way)."""
    out = tmp_path / 'ddp.json'
    result = subprocess.run(
        [sys.executable, PROJECT_ROOT / 'tools' / 'benchmark_ddp.py', SEG_CONFIG, '--gpus', '1', '2', '--iters', '2',
         '--skip', '1', '--workers', '0', '--work-dir', tmp_path / 'runs', '--out', out,
         '--cfg-options', 'model.backbone.arch=nope'],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'})
    assert result.returncode != 0
    assert 'the run(s) on 1, 2 GPU(s) failed' in result.stderr
    report = json.loads(out.read_text())
    assert report['results'] == [] and [run['gpus'] for run in report['failed']] == [1, 2]
    assert all(run['exit_code'] != 0 for run in report['failed'])
