"""Parameters and FLOPs (multiply-accumulates, as the paper counts them) of a config's whole model.

Training form and deploy form (large kernels merged) by default; ``--deploy`` counts the deploy form
only. The model is built with random weights (no pretrained file needed). Default input: H=512, W=2048
for segmentation (the paper's "2048x512"), H=800, W=1280 for detection; one trace of the forward pass
on the CPU, so large models at full size take minutes. See replk_mm/analysis/flops.py for what is counted.
"""
import argparse
import json
import os
import os.path as osp

from mmengine.config import DictAction

import replk_mm  # noqa: F401  (registers RepLKNet)
from replk_mm.analysis import config_complexity
from replk_mm.apis import load_run_config


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: 512 2048 segmentation, 800 1280 detection)')
    parser.add_argument('--deploy', action='store_true', help='count the deploy form only')
    parser.add_argument('--out', help='write the results as JSON to this file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    return parser.parse_args()


def format_table(config, results):
    lines = [f'{config}, input {"x".join(map(str, next(iter(results.values()))["shape"]))} (HxW)',
             f'{"form":<9} {"params":>12} {"FLOPs":>10} {"conv+linear":>11} {"backbone params":>16} '
             f'{"backbone FLOPs":>15}']
    for form, r in results.items():
        lines.append(f'{form:<9} {r["params"] / 1e6:>11.2f}M {r["flops"] / 1e9:>9.1f}G '
                     f'{r["conv_linear_flops"] / 1e9:>10.1f}G {r["backbone_params"] / 1e6:>15.2f}M '
                     f'{r["backbone_flops"] / 1e9:>14.1f}G')
    return '\n'.join(lines)


def main():
    args = parse_args()
    cfg = load_run_config(args.config, args.cfg_options)
    results = config_complexity(cfg, args.shape, ('deploy', ) if args.deploy else ('training', 'deploy'))
    print(format_table(args.config, results))
    print("FLOPs: multiply-accumulates, all ops mmengine's FlopAnalyzer counts; conv+linear: those layers alone, "
          "as the published numbers count; params without a segmentor's auxiliary head")
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(dict(config=args.config, results=results), f, indent=2)


if __name__ == '__main__':
    main()
