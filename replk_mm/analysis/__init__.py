"""Model analysis. ``erf``: the effective receptive field of any MM backbone (``tools/analyze_erf.py``)."""
from .erf import (analyze_config, area_ratios, build_backbone, builtin_images, centred_square, compute_erf,
                  folder_images, input_normalization, load_config, log_scaled, save_figure)

__all__ = ['analyze_config', 'area_ratios', 'build_backbone', 'builtin_images', 'centred_square', 'compute_erf',
           'folder_images', 'input_normalization', 'load_config', 'log_scaled', 'save_figure']
