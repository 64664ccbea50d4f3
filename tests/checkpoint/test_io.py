"""mmengine checkpoints load with torch's weights_only=True; code-running pickles are refused; writes are atomic."""
import builtins
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint, load_checkpoint

from replk_mm.checkpoint import allow_mmengine_checkpoints, safe_load, save_atomic, write_text_atomic


class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((out.squeeze(-1) - targets) ** 2).mean())
        return out


def toy_dataset(n=8):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=generator)
    return [dict(inputs=x[i], targets=x[i].sum()) for i in range(n)]


def make_runner(work_dir, max_iters, resume=False, custom_hooks=None):
    return Runner(
        model=ToyModel(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=toy_dataset(), sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_size=2, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1000),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        custom_hooks=custom_hooks, resume=resume, experiment_name=f'toy_{max_iters}_{resume}')


@pytest.fixture(scope='module')
def runner_checkpoint(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('toy')
    make_runner(work_dir, max_iters=2).train()
    return work_dir


def test_safe_load_reads_runner_checkpoint_without_global_allow_list(runner_checkpoint):
    """safe_load allows mmengine's objects for its own call only; ``import replk_mm`` changes nothing global."""
    path = runner_checkpoint / 'iter_2.pth'
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(f"""
        import torch

        def mmengine_entries():  # torch itself allows its DTensor classes once torch.distributed.tensor loads
            return [str(g) for g in torch.serialization.get_safe_globals() if 'HistoryBuffer' in str(g)
                    or 'numpy' in str(g) or 'getattr' in str(g)]

        import replk_mm
        assert mmengine_entries() == [], 'import widened the allow list'
        assert replk_mm.safe_load({str(path)!r})['meta']['iter'] == 2
        assert mmengine_entries() == [], 'safe_load widened it'
        replk_mm.allow_mmengine_checkpoints()
        assert len(mmengine_entries()) > 10  # the check above can see what the tools allow
        torch.serialization.clear_safe_globals()
        try:
            torch.load({str(path)!r})
        except Exception as err:
            print('refused:', type(err).__name__)
    """)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'refused: UnpicklingError'


@pytest.mark.parametrize('with_hook', [False, True])
def test_loading_hook_lets_a_runner_without_replk_mm_tools_resume(runner_checkpoint, tmp_path, with_hook):
    """What mmseg's and mmdet's own tools get from our configs' MMEngineCheckpointLoadingHook, in a fresh process."""
    work_dir = tmp_path / 'work'
    shutil.copytree(runner_checkpoint, work_dir)
    hooks = [dict(type='MMEngineCheckpointLoadingHook')] if with_hook else None
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import replk_mm  # what custom_imports does
        from test_io import make_runner
        runner = make_runner({str(work_dir)!r}, max_iters=4, resume=True, custom_hooks={hooks!r})
        runner.train()
        print('trained to iteration', runner.iter)
    """)], capture_output=True, text=True, timeout=300)
    if with_hook:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith('trained to iteration 4')
    else:
        assert result.returncode != 0 and 'HistoryBuffer' in result.stderr


def test_runner_checkpoint_loads_with_weights_only(runner_checkpoint):
    allow_mmengine_checkpoints()  # what the tools do before building a Runner
    path = runner_checkpoint / 'iter_2.pth'
    checkpoint = torch.load(path, map_location='cpu')  # torch's default: weights_only=True
    assert checkpoint['meta']['iter'] == 2
    hub = checkpoint['message_hub']['log_scalars']
    assert isinstance(hub['train/loss'].data[0], np.ndarray)
    assert _load_checkpoint(str(path), map_location='cpu')['meta']['iter'] == 2
    # Statistics methods come back through the restricted getattr stand-in.
    from mmengine.logging.history_buffer import HistoryBuffer
    assert hub['train/loss']._statistics_methods['mean'] is HistoryBuffer.mean


def test_runner_resumes_from_checkpoint(runner_checkpoint):
    allow_mmengine_checkpoints()
    runner = make_runner(runner_checkpoint, max_iters=4, resume=True)
    runner.train()
    assert runner.iter == 4
    assert MessageHub.get_current_instance().get_info('iter') == 3


class Payload:
    """Pickles to a call that creates a marker file: proof of code execution on load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, 'w')


@pytest.mark.parametrize('loader', ['torch.load', 'mmengine.load_checkpoint', 'replk_mm.safe_load'])
def test_code_running_checkpoint_is_refused(tmp_path, loader):
    allow_mmengine_checkpoints()  # the allow list the tools set up must not let a payload through either
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'linear.weight': torch.zeros(1, 2)}, 'meta': Payload(str(marker))}, path)
    with pytest.raises(Exception, match='weights_only|WeightsUnpickler|Unsupported global'):
        if loader == 'torch.load':
            torch.load(path)
        elif loader == 'mmengine.load_checkpoint':
            load_checkpoint(ToyModel(), str(path))
        else:
            safe_load(path)
    assert not marker.exists()


def test_safe_load_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        safe_load(tmp_path / 'nope.pth')



class GetattrPayload:
    """Pickles to getattr(HistoryBuffer, '__init__'): the first step of a getattr chain to any object."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return getattr, (HistoryBuffer, '__init__')


def test_getattr_outside_history_buffer_statistics_is_refused(tmp_path):
    path = tmp_path / 'chain.pth'
    torch.save({'meta': GetattrPayload()}, path)
    with pytest.raises(Exception, match="refused getattr"):
        safe_load(path)


def test_atomic_writes_leave_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / 'ckpt.pth'
    save_atomic({'w': torch.ones(2)}, path)
    with pytest.raises(AttributeError, match="Can't pickle local object"):
        save_atomic({'w': lambda: None}, path)  # torch.save cannot pickle a lambda: fails mid-write
    assert torch.equal(safe_load(path)['w'], torch.ones(2))
    write_text_atomic(tmp_path / 'last', 'a')
    write_text_atomic(tmp_path / 'last', 'b')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt.pth', 'last']  # no temporary files left
    assert (tmp_path / 'last').read_text() == 'b'
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask  # not the temporary file's 0600
