"""What tools/train.py and tools/test.py add around mmengine's Runner: checks, safeguards, CPU multi-process."""
import os
import os.path as osp

import torch
from mmengine.config import ConfigDict

from replk_mm.data.coco_check import check_coco_annotations


def set_local_rank(local_rank):
    """torchrun sets LOCAL_RANK; the older launcher passes --local-rank instead."""
    os.environ.setdefault('LOCAL_RANK', str(local_rank))


def apply_training_safeguards(cfg):
    """What tools/train.py adds to any config: atomic checkpoints, resumable RNG, a stop on a
    non-finite loss and label-range checks (segmentation)."""
    checkpoint_hook = cfg.get('default_hooks', {}).get('checkpoint')
    if checkpoint_hook is not None and checkpoint_hook.get('type') in ('CheckpointHook', 'mmengine.CheckpointHook'):
        checkpoint_hook['type'] = 'AtomicCheckpointHook'
    custom_hooks = list(cfg.get('custom_hooks', []))
    wanted = ['FiniteLossHook', 'RNGStateHook'] + (['SegLabelRangeHook'] if cfg.get('default_scope') == 'mmseg' else [])
    present = {hook.get('type') for hook in custom_hooks}
    custom_hooks += [dict(type=name) for name in wanted if name not in present]
    cfg.custom_hooks = custom_hooks


def prepare_distributed(cfg):
    """The DDP wrapper's settings and, for multi-process runs on CPUs, the process group.

    mmengine reads a top-level ``find_unused_parameters`` only where the config has no ``model_wrapper_cfg``
    (ours have one); here it holds either way. On CPUs (gloo) mmengine's init_dist calls torch.cuda.set_device
    and its DDP wrapper always passes GPU device_ids, so this starts the process group and picks our wrapper.
    """
    import torch.distributed as dist
    if cfg.launcher == 'none':
        return
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is not None and cfg.get('find_unused_parameters') is not None:
        wrapper['find_unused_parameters'] = cfg.find_unused_parameters
    if torch.cuda.is_available():
        return
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    # mmengine's defaults, then the config's own wrapper settings (gradient_as_bucket_view, ...), in our wrapper.
    cpu_wrapper = dict(broadcast_buffers=False, find_unused_parameters=cfg.get('find_unused_parameters', False))
    cpu_wrapper.update(wrapper or {})
    cpu_wrapper['type'] = 'CPUCapableDistributedDataParallel'
    cfg.model_wrapper_cfg = cpu_wrapper
    if cfg.launcher == 'pytorch' and not dist.is_initialized():
        dist.init_process_group(backend='gloo')


def check_dataset_paths(cfg, loader_keys):
    """Each named dataloader's data_root, image/label folders and annotation file must exist."""
    for loader_key in loader_keys:
        dataset = (cfg.get(loader_key) or {}).get('dataset')
        if not dataset:
            continue
        data_root = dataset.get('data_root') or ''
        if data_root and not osp.isdir(data_root):
            raise FileNotFoundError(f'{loader_key}.dataset.data_root: directory not found: {data_root}')
        for name, prefix in (dataset.get('data_prefix') or {}).items():
            path = osp.join(data_root, prefix)
            if prefix and not osp.isdir(path):
                raise FileNotFoundError(f'{loader_key}.dataset.data_prefix.{name}: directory not found: {path}')
        ann_file = dataset.get('ann_file')
        if ann_file and not osp.isfile(osp.join(data_root, ann_file)):
            raise FileNotFoundError(
                f'{loader_key}.dataset.ann_file: file not found: {osp.join(data_root, ann_file)}')
        if ann_file and ann_file.endswith('.json') and 'Coco' in str(dataset.get('type', '')):
            img_dir = osp.join(data_root, (dataset.get('data_prefix') or {}).get('img', ''))
            check_coco_annotations(osp.join(data_root, ann_file), img_dir,
                                   for_training=loader_key == 'train_dataloader')


def find_missing_pretrained(cfg):
    """``(config key, path)`` for each local Pretrained ``init_cfg`` checkpoint that does not exist."""
    missing = []

    def walk(node, path):
        if isinstance(node, dict):
            if node.get('type') == 'Pretrained' and isinstance(node.get('checkpoint'), str):
                checkpoint = node['checkpoint']
                if '://' not in checkpoint and not osp.isfile(checkpoint):
                    missing.append((path, checkpoint))
            for key, value in node.items():
                walk(value, f'{path}.{key}' if path else key)
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f'{path}.{i}')

    walk(cfg.get('model', ConfigDict()), 'model')
    return missing
