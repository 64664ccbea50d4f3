"""Effective receptive field of the backbone in one or more MM configs: heat maps and area ratios.

For each config, writes to --out-dir NAME.npy (the mean contribution map), NAME.png (log-scaled heat map)
and NAME.json (side and area ratio of the smallest centred square holding 20/30/50/99% of the
contribution); several configs also give one side-by-side figure (--figure). Method: replk_mm.analysis.erf.
"""
import argparse
import sys
from pathlib import Path

import torch

import replk_mm  # noqa: F401  (registers RepLKNet, safe checkpoint loading)
from replk_mm.analysis import analyze_config, builtin_images, folder_images, save_figure
from replk_mm.analysis.erf import GRAD_MODES, SAMPLE_PHOTO


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+', help='config files, or package::path into an installed MM '
                        "package's configs (e.g. mmseg::_base_/models/upernet_r50.py)")
    parser.add_argument('--checkpoints', nargs='+', help="one per config ('none': random init); a whole "
                        'segmentor/detector checkpoint or a backbone one. Default: random init for all')
    parser.add_argument('--images', help='folder of jpg/png images (default: a small built-in set)')
    parser.add_argument('--num-images', type=int, default=50, help='images to average over (default 50)')
    parser.add_argument('--size', type=int, default=1024, help='images are resized to size x size (default 1024)')
    parser.add_argument('--stage', type=int, default=-1,
                        help="index into the backbone's outputs (its out_indices); default -1, the last")
    parser.add_argument('--grad-mode', choices=GRAD_MODES, default='relu',
                        help="contribution of a pixel: the gradient's positive part (relu, as the paper) or abs")
    parser.add_argument('--out-dir', default='work_dirs/erf', help='output folder (default work_dirs/erf)')
    parser.add_argument('--figure', help='side-by-side figure path (default OUT_DIR/erf_compare.png when '
                        'several configs are given)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--seed', type=int, default=0, help='random initialisation seed (default 0)')
    parser.add_argument('--scope', help="registry scope for configs without default_scope (default mmseg)")
    args = parser.parse_args(argv)
    if args.checkpoints is not None and len(args.checkpoints) != len(args.configs):
        parser.error(f'--checkpoints: got {len(args.checkpoints)} for {len(args.configs)} configs '
                     "(use 'none' for a randomly initialised one)")
    if args.num_images < 1 or args.size < 32:
        parser.error('--num-images must be >= 1 and --size >= 32')
    return args


def unique_names(configs):
    """Output names from the config file names, numbered where two are the same."""
    names = []
    for config in configs:
        stem = Path(config.split('::')[-1]).stem
        name, n = stem, 2
        while name in names:
            name, n = f'{stem}_{n}', n + 1
        names.append(name)
    return names


def main(argv=None):
    args = parse_args(argv)
    if args.images:
        images = folder_images(args.images, args.num_images)
        print(f'using {len(images)} images from {args.images}')
    else:
        images = builtin_images(args.num_images)
        print(f'no --images given: using the built-in set, matplotlib\'s sample photograph {SAMPLE_PHOTO} and '
              f'{len(images) - 1} synthetic 1/f-spectrum images (pass --images for your own data)')
    checkpoints = [None if c in (None, 'none') else c for c in (args.checkpoints or [None] * len(args.configs))]
    panels = []
    for config, checkpoint, name in zip(args.configs, checkpoints, unique_names(args.configs)):
        erf, summary = analyze_config(config, images, args.out_dir, name, checkpoint, args.size, args.stage,
                                      args.grad_mode, args.device, args.scope, args.seed)
        ratios = summary['area_ratio_log_scaled']
        print(f'{name} ({summary["backbone"]}, {"random init" if checkpoint is None else checkpoint}): '
              'area ratio (log-scaled, as the paper) ' +
              ', '.join(f'{k} {v["area_ratio"]:.2%} (side {v["side"]})' for k, v in ratios.items()))
        panels.append((f'{name}\n{summary["backbone"]}', erf))
    print(f'wrote NAME.npy/.png/.json for each config to {args.out_dir}')
    if len(panels) > 1 or args.figure:
        figure = args.figure or str(Path(args.out_dir) / 'erf_compare.png')
        save_figure(panels, figure)
        print(f'wrote the side-by-side figure {figure}')


if __name__ == '__main__':
    sys.exit(main())
