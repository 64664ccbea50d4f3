from .backbones import RepLKNet
from .sync_bn import SyncBatchNormWithoutHostSync

__all__ = ['RepLKNet', 'SyncBatchNormWithoutHostSync']
