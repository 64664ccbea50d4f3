"""What the tools share: configs, model building, synthetic inputs, timing, and the Runner's checks."""
from .builder import build_backbone, build_model, load_backbone_checkpoint, num_classes
from .config import DEPLOY_CFG_OPTIONS, config_scope, deploy_config, load_config, load_run_config, resolve_config_path
from .inputs import random_boxes, synthetic_data_samples
from .timing import OwnMemory, allocator_counts, peak_memory_mib, reset_peak_memory, time_call
from .training import (
                     apply_training_safeguards,
                     check_dataset_paths,
                     find_missing_pretrained,
                     prepare_distributed,
                     set_local_rank,
)

__all__ = ['allocator_counts', 'apply_training_safeguards', 'build_backbone', 'build_model', 'check_dataset_paths',
           'config_scope', 'DEPLOY_CFG_OPTIONS', 'deploy_config', 'find_missing_pretrained', 'load_backbone_checkpoint',
           'load_config', 'load_run_config', 'num_classes', 'OwnMemory', 'peak_memory_mib', 'prepare_distributed',
           'random_boxes', 'reset_peak_memory', 'resolve_config_path', 'set_local_rank', 'synthetic_data_samples',
           'time_call']
