"""Test (and evaluate) a segmentor or detector checkpoint, with mmseg/mmdet's flags.

Segmentation prints per-class IoU and mIoU; detection prints COCO bbox/segm AP. float32 convolutions and
matrix products on a GPU run without TF32 unless ``--tf32`` is given: PyTorch's default lets convolutions
(and our kernels, which follow it) round their inputs to TF32, and a GPU then scores a checkpoint differently
from a CPU (docs/benchmarks.md: Cascade AP 0.743 vs 0.733 with it, 0.733 on both without).
"""
import argparse
import sys

import torch
from mmengine.config import DictAction
from mmengine.runner import Runner

from replk_mm.apis import check_dataset_paths, load_run_config, prepare_distributed, set_local_rank
from replk_mm.checkpoint import allow_mmengine_checkpoints, check_fits_model, safe_load, unwrap_state_dict


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and eval) a segmentor or detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save evaluation results')
    parser.add_argument('--out', help='segmentation: a directory for predicted label maps; '
                        'detection: a .pkl file for the raw results')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory (under the work dir) for painted predictions')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of --show (s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--tta', action='store_true', help='test time augmentation (tta_pipeline, tta_model)')
    parser.add_argument('--tf32', action='store_true',
                        help='let float32 convolutions and matrix products on a GPU use TF32: faster, but the '
                        "scores then differ from a CPU's")
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args()


def enable_visualization(cfg, args):
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise KeyError(f'--show/--show-dir need default_hooks.visualization in {args.config}')
    hook['draw'] = True
    hook['interval'] = 1  # every test image (mmseg's hook would draw every 50th)
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        if cfg.default_scope == 'mmdet':
            hook['test_out_dir'] = args.show_dir
        else:
            cfg.visualizer['save_dir'] = args.show_dir


def set_tf32(enabled):
    """TF32 for float32 convolutions (cuDNN and replk_mm's kernels) and matrix products on CUDA."""
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled


def main():
    args = parse_args()
    set_tf32(args.tf32)
    set_local_rank(args.local_rank)
    try:
        cfg = load_run_config(args.config, args.cfg_options, args.work_dir, args.launcher)
        check_dataset_paths(cfg, ('test_dataloader', ))
        state_dict = unwrap_state_dict(safe_load(args.checkpoint))
    except (FileNotFoundError, KeyError, TypeError, ValueError, RuntimeError) as err:
        sys.exit(f'error: {err.args[0] if err.args else err}')
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None:
        if cfg.default_scope == 'mmdet':
            evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
            cfg.test_evaluator = [*evaluators, dict(type='DumpDetResults', out_file_path=args.out)]
        else:
            cfg.test_evaluator['output_dir'] = args.out
            cfg.test_evaluator['keep_results'] = True

    prepare_distributed(cfg)
    allow_mmengine_checkpoints()  # the Runner loads the checkpoint with torch.load
    runner = Runner.from_cfg(cfg)
    try:  # mmengine would only warn about a checkpoint that does not fit
        check_fits_model(args.checkpoint, state_dict, getattr(runner.model, 'module', runner.model).state_dict(),
                         args.config)
    except ValueError as err:
        sys.exit(f'error: {err}')
    metrics = runner.test()
    for name, value in metrics.items():
        print(f'{name}: {value}')


if __name__ == '__main__':
    main()
