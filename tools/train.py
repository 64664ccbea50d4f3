"""Train a segmentor or detector from a config, with mmseg/mmdet's flags.

The config's ``default_scope`` (mmseg or mmdet) decides the library; mmengine's Runner does the work.
"""
import argparse
import logging
import sys

from mmengine.config import DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

from replk_mm.apis import (
    apply_training_safeguards,
    check_dataset_paths,
    find_missing_pretrained,
    load_run_config,
    prepare_distributed,
    set_local_rank,
)
from replk_mm.checkpoint import MISSING_PRETRAINED_HINT, allow_mmengine_checkpoints


def parse_args():
    parser = argparse.ArgumentParser(description='Train a segmentor or detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from the latest checkpoint in the work dir, or from the given checkpoint')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision training')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'],
                        help='mixed precision in this dtype (implies --amp; --amp alone: float16 on GPUs)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr linearly by the actual global batch over auto_scale_lr.base_batch_size (the '
                        "batch of the published run the config's lr comes from); the RepLKNet recipes kept their lr "
                        'at every batch and changed the iterations instead: leave this off to reproduce them')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (e.g. train_dataloader.batch_size=4)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args()


def enable_amp(cfg, dtype=None):
    """--amp / --amp-dtype: AmpOptimWrapper autocasting to ``dtype`` (None: the device's default).

    float16 keeps dynamic loss scaling against gradient underflow; bfloat16 has float32's exponent range,
    so its scaler is switched off (scaling would only add an overflow check and skipped steps).
    """
    if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
        print_log('AMP training is already enabled in your config.', logger='current', level=logging.WARNING)
    else:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = dict(enabled=False) if dtype == 'bfloat16' else 'dynamic'
    if dtype is not None:
        cfg.optim_wrapper.dtype = dtype


def main():
    args = parse_args()
    set_local_rank(args.local_rank)
    try:
        cfg = load_run_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    except (FileNotFoundError, KeyError, TypeError) as err:
        sys.exit(f'error: {err.args[0] if err.args else err}')
    missing = find_missing_pretrained(cfg)
    if missing:
        for key, path in missing:
            print(f'error: pretrained checkpoint not found: {path} (config key {key}); {MISSING_PRETRAINED_HINT}',
                  file=sys.stderr)
        sys.exit(2)
    try:
        check_dataset_paths(cfg, ('train_dataloader', 'val_dataloader'))
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'error: {err.args[0] if err.args else err}')
    apply_training_safeguards(cfg)

    if args.amp or args.amp_dtype:
        enable_amp(cfg, args.amp_dtype)
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            sys.exit(f'error: --auto-scale-lr needs auto_scale_lr.base_batch_size in {args.config}')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume

    prepare_distributed(cfg)
    allow_mmengine_checkpoints()  # the Runner loads --resume / load_from files with torch.load
    runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
