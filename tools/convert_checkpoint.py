"""Convert any released RepLKNet checkpoint into a clean replk_mm backbone checkpoint.

Reads (safely: weights_only=True, nothing is unpickled beyond tensors and plain data) the official
PyTorch files (flat, or under 'model' / 'state_dict'), mmpretrain-converted files, ImageNet-22K files
and whole segmentor/detector checkpoints, in training or deploy form. Writes
``{'state_dict': backbone weights in the official naming, 'meta': {source, form, arch}}``,
through a temporary file, so DST is never left half-written; SRC is never overwritten.
``--deploy`` merges the large-kernel branches (a deploy-form SRC stays deploy form either way).
"""
import argparse
import os.path as osp
import sys

from replk_mm.checkpoint import (
    describe_arch,
    extract_backbone_state_dict,
    infer_arch,
    is_deploy_form,
    is_training_form,
    merge_large_kernels,
    require_replknet,
    safe_load,
    same_file,
    save_atomic,
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='checkpoint to read')
    parser.add_argument('dst', help='backbone checkpoint to write')
    parser.add_argument('--deploy', action='store_true', help='merge the large-kernel branches (deploy form)')
    return parser.parse_args()


def convert(src, deploy=False):
    """(clean checkpoint dict, {ignored key: reason}) for the file ``src``."""
    state, ignored = extract_backbone_state_dict(safe_load(src))
    require_replknet(src, state)
    if deploy and is_training_form(state):
        state = merge_large_kernels(state)
    form = 'deploy' if is_deploy_form(state) else 'training'
    meta = dict(source=osp.basename(src), form=form, arch=describe_arch(infer_arch(state)),
                converted_by='replk_mm tools/convert_checkpoint.py')
    return dict(meta=meta, state_dict=state), ignored


def main():
    args = parse_args()
    if same_file(args.src, args.dst):
        sys.exit(f'error: refusing to overwrite the source {args.src}; give another DST')
    checkpoint, ignored = convert(args.src, args.deploy)
    save_atomic(checkpoint, args.dst)
    meta = checkpoint['meta']
    print(f'wrote {args.dst}: {len(checkpoint["state_dict"])} tensors, arch {meta["arch"]}, {meta["form"]} form')
    if ignored:
        print(f'left out {len(ignored)} keys that are not backbone weights: {", ".join(sorted(ignored)[:8])}'
              + (' ...' if len(ignored) > 8 else ''))


if __name__ == '__main__':
    main()
