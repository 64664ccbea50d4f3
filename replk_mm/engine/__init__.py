"""Training engine parts: hooks (atomic checkpoints, resumable randomness, early stop on a non-finite loss,
label checks, safe checkpoint loading), a DDP wrapper that also runs on CPU processes, and an optimizer-wrapper
constructor that merges mmengine's per-parameter groups; importing makes mmengine's autocast traceable by
torch.compile (:mod:`.compile`)."""
from . import compile  # noqa: F401  (mmengine's autocast: a version check dynamo can trace)
from .ddp import CPUCapableDistributedDataParallel
from .hooks import AtomicCheckpointHook, FiniteLossHook, MMEngineCheckpointLoadingHook, RNGStateHook, SegLabelRangeHook
from .optim import MergedGroupsOptimWrapperConstructor

__all__ = ['AtomicCheckpointHook', 'CPUCapableDistributedDataParallel', 'FiniteLossHook',
           'MergedGroupsOptimWrapperConstructor', 'MMEngineCheckpointLoadingHook', 'RNGStateHook',
           'SegLabelRangeHook']
