"""The one timer of every benchmark tool: warm up, then time each call alone and keep every time.

CUDA: events around each call with a synchronisation before it, so queued work is not counted and the
call's own is; CPU: ``time.perf_counter``. Report the median (robust to the odd slow repeat).
"""
import contextlib
import time

import torch


def time_call(fn, device, warmup, repeats):
    """Seconds of each of ``repeats`` calls of ``fn``, after ``warmup`` untimed calls."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times


def reset_peak_memory(device):
    """Start a new peak-memory window (CUDA only)."""
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device):
    """Peak allocated memory since :func:`reset_peak_memory`, in MiB; None off CUDA."""
    device = torch.device(device)
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else None


ALLOCATOR_COUNTS = ('num_device_alloc', 'num_device_free', 'num_alloc_retries')


def allocator_counts(device):
    """The CUDA caching allocator's running counts of cudaMalloc and cudaFree calls, and of retries after
    freeing its whole cache (each a device-wide synchronisation): where these grow within timed steps, the
    allocator, not the model, may set their pace. Empty off CUDA."""
    device = torch.device(device)
    if device.type != 'cuda':
        return {}
    stats = torch.cuda.memory_stats(device)
    return {name: stats.get(name, 0) for name in ALLOCATOR_COUNTS}


class OwnMemory:
    """One model's peak allocated memory where several models share a process (CUDA only; None elsewhere).

    The model is charged what is allocated in its :meth:`charged` blocks and kept (its weights, if it is built in
    one; optimizer state, CUDA-graph pools), and each block's transient peak; not what other models or the caller
    (input batches) hold. Blocks of different models must not overlap.
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.held = self.peak = 0

    @contextlib.contextmanager
    def charged(self):
        """Charge what is allocated inside the block to this model (the allocator's host-side counts: no sync)."""
        if self.device.type != 'cuda':
            yield
            return
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        yield
        self.peak = max(self.peak, self.held + torch.cuda.max_memory_allocated(self.device) - before)
        self.held += torch.cuda.memory_allocated(self.device) - before

    def peak_mib(self):
        return self.peak / 2**20 if self.device.type == 'cuda' else None
