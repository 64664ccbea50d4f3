"""Hooks that make a killed or diverging run lose nothing and say what went wrong."""
import os
import os.path as osp

import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook, Hook

from replk_mm.checkpoint import allow_mmengine_checkpoints, write_text_atomic
from replk_mm.registry import register_hook


@register_hook
class AtomicCheckpointHook(CheckpointHook):
    """CheckpointHook that never leaves a half-written checkpoint where ``--resume`` looks.

    mmengine writes ``iter_N.pth`` in place, and deletes the oldest kept checkpoint *before*
    writing the new one, so a kill at the wrong moment can leave ``last_checkpoint`` pointing at
    a deleted or truncated file. Here the checkpoint goes to ``iter_N.pth.tmp`` and is renamed
    once complete, ``last_checkpoint`` is replaced atomically, and only then are old ones removed.
    """

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        stale_step = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale_step = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, f'{filename}.tmp', self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        with open(f'{self.last_ckpt}.tmp', 'rb+') as f:  # on disk before it can be named last_checkpoint
            os.fsync(f.fileno())
        os.replace(f'{self.last_ckpt}.tmp', self.last_ckpt)
        write_text_atomic(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if stale_step is not None:
            stale = osp.join(self.out_dir, self.filename_tmpl.format(stale_step))
            if osp.isfile(stale):
                os.remove(stale)


@register_hook
class RNGStateHook(Hook):
    """Carry torch's RNG state (drop path, dropout) through checkpoints, so a resumed run draws
    the same random numbers as an uninterrupted one.

    numpy's state (data augmentation) needs no saving: on resume the loop replays the data it
    skips, which advances numpy exactly as the first run did. The torch state is restored just
    before the first iteration after resume, once that replay is done.
    """
    priority = 'VERY_HIGH'

    def __init__(self):
        self._resumed_state = None

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint['rng_state'] = dict(
            torch=torch.get_rng_state(),
            cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])

    def after_load_checkpoint(self, runner, checkpoint):
        self._resumed_state = checkpoint.get('rng_state')

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self._resumed_state is None:
            return
        torch.set_rng_state(self._resumed_state['torch'])
        if self._resumed_state['cuda'] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._resumed_state['cuda'])
        self._resumed_state = None


@register_hook
class FiniteLossHook(Hook):
    """Stop at the first non-finite loss, before any checkpoint of the broken weights is saved."""
    priority = 'ABOVE_NORMAL'  # CheckpointHook runs later (VERY_LOW)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        loss = (outputs or {}).get('loss')
        if loss is None or torch.isfinite(torch.as_tensor(loss)).all():
            return
        last = runner.message_hub.get_info('last_ckpt')
        raise FloatingPointError(
            f'the loss became {float(loss)} at iteration {runner.iter + 1}; training stopped without saving. '
            f'Last good checkpoint: {last or "none saved yet"}')


@register_hook
class SegLabelRangeHook(Hook):
    """Refuse label maps with values outside the classes (other than the ignore index).

    Without it a stray value fails deep inside the loss ("Target 199 is out of bounds") without
    naming the file; here the error names the label file and the offending values. The loop waits for it
    before every iteration, so valid maps are only compared (under 1 ms for 2 x 512x512): ``unique()`` of one
    such int64 map takes 12 ms on one core.
    """
    priority = 'VERY_HIGH'

    def __init__(self, ignore_index=255):
        self.ignore_index = ignore_index
        self.num_classes = None

    def before_train(self, runner):
        self.num_classes = len(runner.train_dataloader.dataset.metainfo['classes'])

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        for sample in (data_batch or {}).get('data_samples', []):
            if 'gt_sem_seg' not in sample:
                continue
            labels = sample.gt_sem_seg.data
            outside = ((labels < 0) | (labels >= self.num_classes)) & (labels != self.ignore_index)
            if outside.any():
                raise ValueError(
                    f"label file {sample.metainfo.get('seg_map_path')} has values {labels[outside].unique().tolist()} "
                    f'outside the {self.num_classes} classes (0..{self.num_classes - 1}, after reduce_zero_label if '
                    f'set) and the ignore index {self.ignore_index}')


@register_hook
class MMEngineCheckpointLoadingHook(Hook):
    """Let the Runner's ``torch.load(weights_only=True)`` read mmengine checkpoints (``--resume``, ``load_from``).

    For mmseg's and mmdet's own tools, which know nothing of replk_mm: the Runner calls ``before_run`` before it
    loads a checkpoint. Our configs list this hook; ``tools/train.py`` and ``tools/test.py`` need no hook.
    """
    priority = 'VERY_HIGH'

    def before_run(self, runner):
        allow_mmengine_checkpoints()
