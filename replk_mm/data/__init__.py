"""Data on disk: small synthetic datasets in the official layouts (quickstart, tests) and checks of real ones."""
from .coco_check import check_coco_annotations
from .synthetic_coco import make_coco
from .synthetic_seg import make_ade20k, make_cityscapes

__all__ = ['check_coco_annotations', 'make_ade20k', 'make_cityscapes', 'make_coco']
