"""Re-parameterise a trained segmentor or detector: merge every large-kernel branch of its RepLKNet backbone.

Writes the deploy checkpoint and a config that builds the backbone merged (small_kernel_merged=True,
no pretrained init), after checking on a random input (eval mode, CPU, float32) that the merged model's
outputs equal the original's. Exits with 1, writing nothing, if the max relative error exceeds 1e-4.
Instead of the written config, the original one with
``--cfg-options model.backbone.small_kernel_merged=True model.backbone.init_cfg=None`` works too.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

from replk_mm.apis import DEPLOY_CFG_OPTIONS, build_model, deploy_config, load_run_config
from replk_mm.checkpoint import reparameterize_checkpoint, same_file, save_atomic

TOLERANCE = 1e-4


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='trained checkpoint (mmengine format: state_dict, meta)')
    parser.add_argument('out', help='path of the deploy checkpoint to write')
    parser.add_argument('--out-config', help='path of the deploy config to write (default: OUT with .py)')
    parser.add_argument('--shape', type=int, nargs=2, default=[256, 256], metavar=('H', 'W'),
                        help='input size of the equivalence check (default: 256 256)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value; they go into the written config too')
    return parser.parse_args()


def main():
    args = parse_args()
    out_config = args.out_config or osp.splitext(args.out)[0] + '.py'
    if not out_config.endswith('.py'):
        sys.exit(f'error: --out-config {out_config}: the config must be a .py file')
    for output in (args.out, out_config):
        for source in (args.config, args.checkpoint):
            if same_file(output, source):
                sys.exit(f'error: refusing to overwrite the input {source} with an output')
    if same_file(args.out, out_config):
        sys.exit(f'error: the checkpoint and the config would both be written to {out_config}: give --out-config')
    cfg = load_run_config(args.config, args.cfg_options)
    try:
        checkpoint, error = reparameterize_checkpoint(build_model(cfg), args.checkpoint, args.config,
                                                      tuple(args.shape))
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        sys.exit(f'error: {err}')
    merged = checkpoint['meta']['replk_mm_deploy']['merged_convs']
    print(f'merged {merged} large-kernel convs of model.backbone')
    print(f'relative error of the outputs, merged vs original (eval mode, input 1x3x{args.shape[0]}x'
          f'{args.shape[1]}): {error:.3e}')
    if error > TOLERANCE:
        sys.exit(f'error: relative error {error:.3e} exceeds {TOLERANCE:g}; nothing written')
    save_atomic(checkpoint, args.out)
    deploy_cfg = deploy_config(cfg)
    deploy_cfg.pop('work_dir', None)  # load_run_config's default work dir belongs to the training config
    deploy_cfg.dump(out_config)
    print(f'wrote the deploy checkpoint {args.out} and its config {out_config}')
    print(f'test it with: python tools/test.py {out_config} {args.out}')
    print(f'or with the original config: python tools/test.py {args.config} {args.out} '
          f'--cfg-options {DEPLOY_CFG_OPTIONS}')


if __name__ == '__main__':
    main()
