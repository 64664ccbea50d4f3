"""Decode heads: mmseg's UPerHead and FCNHead without atomic-add resizes or topk accuracy."""
from .decode_heads import FastFCNHead, FastUPerHead, top1_accuracy
from .resize import bilinear_resize

__all__ = ['bilinear_resize', 'FastFCNHead', 'FastUPerHead', 'top1_accuracy']
