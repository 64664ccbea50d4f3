"""Reading and writing checkpoints safely: weights-only loading and atomic writes.

Loading, on torch >= 2.6 for the objects mmengine 0.10.7 writes:

``torch.load`` defaults to ``weights_only=True``: it refuses any pickled global outside an allow
list, so a checkpoint can never run code while it loads. mmengine's checkpoints carry a few plain
data types besides tensors (the message hub's ``HistoryBuffer`` with numpy arrays and scalars,
and its statistics methods, pickled as ``getattr(HistoryBuffer, 'mean')``);
:func:`safe_load` allows exactly those, for its own call only; :func:`allow_mmengine_checkpoints`
adds them to torch's global allow list, for mmengine's own loading (resume, ``load_from``), and is
called by the tools, never on import. ``getattr`` itself is never allowed (chained, it reaches any
object): the name ``builtins.getattr`` is mapped to :func:`history_buffer_statistic`, which resolves
only those methods. Safe loading stays on.

Writing: :func:`write_atomic` (and :func:`save_atomic`, :func:`write_text_atomic` on it) goes through a
temporary file in the same folder, flushed to disk and renamed, so a reader (or a resumed run) sees the
old file or the new one, never a part; the file gets the usual permissions (0666 less the umask).
"""
import os
import os.path as osp
import pickle
import tempfile

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
    """Let every ``torch.load(weights_only=True)`` of this process read mmengine checkpoints.

    mmengine's Runner loads ``--resume`` and ``load_from`` files with a plain ``torch.load``; the tools call
    this before building it. Code of your own can call it too (or use :func:`safe_load`, which needs nothing).
    """
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())


def mmengine_checkpoints_readable():
    """A context in which ``torch.load(weights_only=True)`` reads mmengine checkpoints (for that block only)."""
    return torch.serialization.safe_globals(mmengine_checkpoint_globals())


def safe_load(path, map_location='cpu'):
    """``torch.load`` with ``weights_only=True``; a refused or unreadable file names itself."""
    try:
        with mmengine_checkpoints_readable():
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f'checkpoint file not found: {path}') from None
    except Exception as err:
        raise RuntimeError(f'could not load checkpoint {path} safely (weights_only=True): '
                           f'{type(err).__name__}: {err}') from err


def write_atomic(path, write):
    """Call ``write(tmp_path)``, fsync the file, give it the usual permissions (mkstemp's are 0600) and
    rename it to ``path``; remove it on any failure."""
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=directory)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.unlink(tmp)
        raise


def save_atomic(obj, path):
    """``torch.save(obj)`` to ``path`` atomically (see the module docstring)."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` atomically (see the module docstring)."""

    def write(tmp):
        with open(tmp, 'w') as f:
            f.write(text)

    write_atomic(path, write)


def same_file(a, b):
    """Whether two paths name one file (also through links), for the tools' refusal to overwrite inputs."""
    return osp.exists(a) and osp.exists(b) and osp.samefile(a, b) or osp.abspath(a) == osp.abspath(b)
