"""The main job on a built-in small default: train a tiny RepLKNet UperNet on synthetic ADE20K.

Writes a synthetic dataset in the ADE20K on-disk layout (if not there yet), trains from scratch
with `configs/upernet_replknet_tiny_synthetic_ade20k.py` on the CPU (a few minutes on 2 cores),
evaluates, and prints mIoU against chance. Exits non-zero if the model learned nothing.
"""
import argparse
import os.path as osp
import sys

from mmengine.runner import Runner

import replk_mm  # noqa: F401
from replk_mm.apis import load_run_config
from replk_mm.data import make_ade20k

CONFIG = osp.join(osp.dirname(__file__), '..', 'configs', 'upernet_replknet_tiny_synthetic_ade20k.py')
NUM_CLASSES = 8


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default='data/synthetic_ade20k')
    parser.add_argument('--work-dir', default='work_dirs/quickstart')
    args = parser.parse_args()

    if not osp.isdir(osp.join(args.data_root, 'images', 'training')):
        make_ade20k(args.data_root, num_classes=NUM_CLASSES)
        print(f'wrote a synthetic ADE20K-format dataset ({NUM_CLASSES} classes) to {args.data_root}')
    cfg = load_run_config(CONFIG, cfg_options={
        'train_dataloader.dataset.data_root': args.data_root,
        'val_dataloader.dataset.data_root': args.data_root,
        'test_dataloader.dataset.data_root': args.data_root,
    }, work_dir=args.work_dir)
    runner = Runner.from_cfg(cfg)
    runner.train()
    miou = runner.test()['mIoU']
    chance = 100 / NUM_CLASSES
    print(f'quickstart: mIoU {miou:.2f} on the synthetic validation set (chance about {chance:.1f}); '
          f'checkpoints and logs in {args.work_dir}')
    if miou < 2 * chance:
        sys.exit('quickstart: the model did not learn (mIoU below twice chance)')


if __name__ == '__main__':
    main()
