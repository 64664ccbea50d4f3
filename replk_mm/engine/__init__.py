"""Training reliability: atomic checkpoints, resumable randomness, early stop on a non-finite loss."""
from .ddp import CPUCapableDistributedDataParallel
from .hooks import AtomicCheckpointHook, FiniteLossHook, RNGStateHook, SegLabelRangeHook

__all__ = ['AtomicCheckpointHook', 'FiniteLossHook', 'RNGStateHook', 'SegLabelRangeHook',
           'CPUCapableDistributedDataParallel']
