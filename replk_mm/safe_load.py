"""Safe checkpoint loading on torch >= 2.6 for the objects mmengine 0.10.7 writes.

``torch.load`` defaults to ``weights_only=True``: it refuses any pickled global outside an allow
list, so a checkpoint can never run code while it loads. mmengine's checkpoints carry a few plain
data types besides tensors (the message hub's ``HistoryBuffer`` with numpy arrays and scalars,
and its statistics methods, pickled as ``getattr(HistoryBuffer, 'mean')``);
:func:`allow_mmengine_checkpoints` adds exactly those to the allow list. ``getattr`` itself is
never allowed (chained, it reaches any object): the name ``builtins.getattr`` is mapped to
:func:`history_buffer_statistic`, which resolves only those methods. Safe loading stays on.
"""
import pickle

import numpy as np
import torch

try:  # numpy >= 2 moved the pickling helpers to numpy._core; old pickles name numpy.core.
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

# HistoryBuffer's own statistics methods (its instances fill _statistics_methods with them lazily).
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
# Dtypes a HistoryBuffer or a metric value can hold.
_NUMPY_DTYPES = (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
                 np.uint8, np.bool_)


def history_buffer_statistic(owner, name):
    """The only ``getattr`` a checkpoint may call: a registered HistoryBuffer statistics method."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if owner is HistoryBuffer:
        if name in HISTORY_BUFFER_STATISTICS:
            return getattr(HistoryBuffer, name)
        if name in HistoryBuffer._statistics_methods:  # registered with HistoryBuffer.register_statistics
            return HistoryBuffer._statistics_methods[name]
    raise pickle.UnpicklingError(f'refused getattr({owner!r}, {name!r}) while loading a checkpoint: only '
                                 f'HistoryBuffer statistics methods are allowed')


def mmengine_checkpoint_globals():
    """The non-tensor globals in an mmengine checkpoint, as ``torch.serialization.add_safe_globals`` takes them."""
    from mmengine.logging.history_buffer import HistoryBuffer
    allowed = [HistoryBuffer, np.ndarray, np.dtype, (history_buffer_statistic, 'builtins.getattr')]
    allowed += [type(np.dtype(dtype)) for dtype in _NUMPY_DTYPES]
    for name in ('_reconstruct', 'scalar'):
        func = getattr(_multiarray, name)
        allowed += [func, (func, f'numpy.core.multiarray.{name}'), (func, f'numpy._core.multiarray.{name}')]
    return allowed


def allow_mmengine_checkpoints():
    """Let ``torch.load(weights_only=True)`` read mmengine checkpoints (resume, load_from, test)."""
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())


def safe_load(path, map_location='cpu'):
    """``torch.load`` with ``weights_only=True``; a refused or unreadable file names itself."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f'checkpoint file not found: {path}') from None
    except Exception as err:
        raise RuntimeError(f'could not load checkpoint {path} safely (weights_only=True): '
                           f'{type(err).__name__}: {err}') from err
