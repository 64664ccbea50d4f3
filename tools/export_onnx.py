"""Export a trained RepLKNet segmentor, detector or backbone to ONNX in deploy form, checked with onnxruntime.

A segmentor exports to its logits (``model._forward``), a detector to its backbone + neck feature maps,
``--part backbone`` to the backbone's feature maps; the input is the image tensor after the data
preprocessor's normalisation (recorded in the file's metadata). Large kernels are merged and the graph holds
standard Conv nodes only. The file is run with onnxruntime on the CPU and compared with PyTorch (the model
as loaded, before merging): the relative error is printed, and above 1e-4 nothing is written and the exit
code is 1. Bad input (files, config/checkpoint mismatch, an output that cannot be written) exits with 2.
"""
import argparse
import sys
from collections import Counter

from mmengine.config import DictAction

from replk_mm.apis import load_run_config
from replk_mm.apis.export import (
    PARTS,
    TOLERANCE,
    ExportCheckError,
    check_output_path,
    export_checked,
    exportable_model,
    onnx_metadata,
)
from replk_mm.apis.inference import exit_on_input_error


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the config of the checkpoint (training or deploy form)')
    parser.add_argument('checkpoint', help='trained checkpoint of the config (with --part backbone: any RepLKNet file)')
    parser.add_argument('out', help='path of the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'),
                        help='input height and width of the export and its check (default: 512 512)')
    parser.add_argument('--dynamic', action='store_true',
                        help='symbolic batch, height and width; also checked at a second input size')
    parser.add_argument('--part', choices=PARTS, default='model',
                        help='model: segmentor logits / detector backbone+neck features; backbone: backbone only')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    return parser.parse_args()


def main():
    args = parse_args()
    with exit_on_input_error():
        check_output_path(args.out, (args.config, args.checkpoint))
        cfg = load_run_config(args.config, args.cfg_options)
        exported = exportable_model(cfg, args.config, args.checkpoint, args.part)
    print(f'exporting {exported.KINDS[exported.kind]} of {args.config} with {args.checkpoint}')
    try:
        report = export_checked(exported, args.out, tuple(args.shape), args.dynamic,
                                onnx_metadata(cfg, args.config, args.checkpoint, exported))
    except ExportCheckError as err:
        print(f'error: {err}', file=sys.stderr)
        sys.exit(1)
    kernels = Counter(report['conv_kernels'])
    print(f'merged {report["merged"]} large-kernel convs; the graph has {len(report["conv_kernels"])} large-kernel '
          f'Conv nodes ({", ".join(f"{size} x{count}" for size, count in kernels.items())}) and only standard ops')
    worst = max(error for _, error in report['errors'])
    print(f'wrote {args.out}: outputs {", ".join(report["outputs"])}; max relative error {worst:.2e} '
          f'(tolerance {TOLERANCE:g}){", dynamic batch/height/width" if args.dynamic else ""}')


if __name__ == '__main__':
    main()
