from .backbones import RepLKNet

__all__ = ['RepLKNet']
