"""Small synthetic datasets in the official on-disk layouts, for the quickstart and the tests."""
from .synthetic_coco import make_coco
from .synthetic_seg import make_ade20k, make_cityscapes

__all__ = ['make_ade20k', 'make_cityscapes', 'make_coco']
