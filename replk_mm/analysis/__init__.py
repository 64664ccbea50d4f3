"""Model analysis: the effective receptive field of any MM backbone (``erf``) and a model's FLOPs (``flops``)."""
from .erf import (
                  analyze_config,
                  area_ratios,
                  builtin_images,
                  centred_square,
                  compute_erf,
                  folder_images,
                  input_normalization,
                  log_scaled,
                  save_figure,
)
from .flops import config_complexity

__all__ = ['analyze_config', 'area_ratios', 'builtin_images', 'centred_square', 'compute_erf', 'config_complexity',
           'folder_images', 'input_normalization', 'log_scaled', 'save_figure']
