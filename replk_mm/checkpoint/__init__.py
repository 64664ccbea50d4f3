"""Checkpoints: safe loading, atomic saving, released layouts, fit checks, pretrained loading, re-parameterising."""
from .fit import check_fits_model, check_same_arch, first_mismatch
from .formats import (
                      describe_arch,
                      extract_backbone_state_dict,
                      infer_arch,
                      is_deploy_form,
                      is_training_form,
                      merge_large_kernels,
                      require_replknet,
                      unwrap_state_dict,
)
from .io import allow_mmengine_checkpoints, safe_load, same_file, save_atomic, write_atomic, write_text_atomic
from .pretrained import DEPLOY_HINT, MISSING_PRETRAINED_HINT, load_checkpoint_file, load_pretrained
from .reparam import comparable_outputs, reparameterize_checkpoint, switch_to_deploy

__all__ = ['allow_mmengine_checkpoints', 'check_fits_model', 'check_same_arch', 'comparable_outputs',
           'describe_arch', 'DEPLOY_HINT', 'extract_backbone_state_dict', 'first_mismatch', 'infer_arch',
           'is_deploy_form', 'is_training_form', 'load_checkpoint_file', 'load_pretrained', 'merge_large_kernels',
           'MISSING_PRETRAINED_HINT', 'reparameterize_checkpoint', 'require_replknet', 'safe_load', 'same_file',
           'save_atomic', 'switch_to_deploy', 'unwrap_state_dict', 'write_atomic', 'write_text_atomic']
