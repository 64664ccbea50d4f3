"""Predict on your own images with a trained segmentor or detector, and paint the results.

Segmentation: a colour overlay with a legend of the classes present; detection: boxes and masks with
class names and scores. Writes OUT_DIR/vis/NAME.png (painted) and OUT_DIR/pred/NAME.png (label map,
values = class indices) or OUT_DIR/pred/NAME.json (boxes, scores, labels, class names, RLE masks).
Inputs are image files or folders (searched recursively). A missing or unreadable input, or a checkpoint
that does not fit the config, stops with one line naming the file (exit code 2).
"""
import argparse

from mmengine.config import DictAction

from replk_mm.apis.inference import check_writable_dir, exit_on_input_error, init_inferencer, list_images, run_inference


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the config of the checkpoint (training or deploy form)')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument('inputs', nargs='+', help='image files and folders of images')
    parser.add_argument('--out-dir', required=True, help='where vis/ and pred/ are written')
    parser.add_argument('--device', help='cpu, cuda, cuda:1, ... (default: cuda if available)')
    parser.add_argument('--score-thr', type=float, default=0.3, help='detection: lowest score drawn (default 0.3)')
    parser.add_argument('--opacity', type=float, default=0.5, help='segmentation: overlay opacity (default 0.5)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    return parser.parse_args()


def main():
    args = parse_args()
    with exit_on_input_error():
        images = list_images(args.inputs)
        check_writable_dir(args.out_dir)
        inferencer = init_inferencer(args.config, args.checkpoint, args.cfg_options, args.device)
    with exit_on_input_error(errors=(ValueError, OSError)):  # an unreadable image, an output that cannot be written
        painted = run_inference(inferencer, images, args.out_dir, args.score_thr, args.opacity)
    print(f'painted {len(painted)} images into {args.out_dir}/vis; predictions in {args.out_dir}/pred')


if __name__ == '__main__':
    main()
