"""Triton kernels for the depthwise large-kernel convolution (forward, input and weight gradients).

A depthwise KxK conv does 2*K^2 FLOPs per output and PyTorch runs it on CUDA cores, far below their
rate. Every pass here is recast as small matrix products so that ``tl.dot`` runs on tensor cores:

* forward, and the input gradient (the same conv with the kernel turned 180 degrees): for one
  channel and kernel row ``kh``, a block of output rows is ``X[rows h + kh - p] @ T_kh``, where
  ``T_kh[i, j] = w[kh, i - j + p]`` is a banded (Toeplitz) matrix gathered from the K weights of
  that row ('rows' kernel). The rows of all images are numbered one after another, so a block may
  span several images; kernel rows that only meet zero padding for the whole block are skipped.
  Maps of at most 256 pixels instead gather the whole conv of a channel as one (H*W) x (H*W)
  matrix and apply it to a block of images in a single product ('plane' kernel).
* weight gradient: ``gw[kh, kw] = sum_t x[h + kh - p, i] * gy[h, i - kw + p]`` over
  ``t = (n, h, i)``. Both factors are shifted views of the flattened maps, so per channel it is one
  ``[K, T] @ [T, K]`` product, split over ``T`` across programs and summed with fp32 atomics.

With ``FLIP`` the conv kernels read the weight turned 180 degrees: the input gradient needs no flip
of the weight beforehand. They take the weight in the input's dtype: :func:`launch_conv` casts a
float32 weight (autocast's parameters) first. Kernels that loaded the float32 weight and rounded it
themselves ran 3-10x slower than on a cast weight, the cast included (H200, bf16: 2x128x200x304,
K=31, forward 1.89 against 0.37 ms; 64x128x56x56 4.67 against 0.48 ms).

Sizes N, C, H, W are runtime arguments that Triton does not specialise on (``do_not_specialize``),
so a new image size compiles nothing. What is compiled depends on the dtype, K, the tile
configuration and a few size classes (:func:`size_class`): plane or rows kernel, the tile width
(16, 32, 64 or 32-column tiles with a halo) and whether rows start 16-byte aligned, the last
passed as a hint so that row loads stay vectorised. :data:`variants` records every distinct
specialisation launched, in the interpreter as on the GPU.

Each call shape, dtypes and device have a launch plan (:class:`_Launch`: kernel, grid, sizes,
compile-time arguments), made once. Triton's own launch (``kernel[grid](...)``) binds and
specialises the arguments and looks up its cache on every call, tens of microseconds of host time;
after a plan's first launch, its later launches call the compiled kernel directly (see
:meth:`_Launch.launch_compiled`).

All products accumulate in fp32. float32 operands go through the tensor cores as tf32 when
``torch.backends.cudnn.allow_tf32`` is set (PyTorch's default for convolutions), else as tf32x3
(three tf32 products, about float32 accuracy).
"""
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import torch

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

# triton.jit reads TRITON_INTERPRET when the kernels below are defined, so it is read once here too.
INTERPRET = os.environ.get('TRITON_INTERPRET') == '1'
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_KERNEL = 31
# Every distinct (kernel, pointer dtypes, compile-time arguments) launched in this process: what Triton compiles.
variants = set()
_available = None  # available(), once asked


def available():
    """Whether Triton kernels can run in this process (on CUDA, or on the CPU in the interpreter); asked once."""
    global _available
    if _available is None:
        _available = triton is not None and (INTERPRET or torch.cuda.is_available())
    return _available


def covers_kernel_size(K):
    return K % 2 == 1 and K <= MAX_KERNEL


def supports(input, kernel_size, weight_device=None):
    """Whether the kernels cover a call: input dtype, device (the weight's too, if given) and sizes."""
    device = input.device
    return (available() and input.dtype in DTYPES and covers_kernel_size(kernel_size)
            and 0 < input.numel() < 2**31  # int32 offsets in the kernels
            and (weight_device is None or weight_device == device)
            and (device.type == 'cuda' or (INTERPRET and device.type == 'cpu')))


def _pow2(n):
    return 1 << (max(int(n), 1) - 1).bit_length()


def _row_alignment(W, itemsize):
    """Elements per 16 bytes, else per 8 bytes, that every row start is aligned to, else 1: a hint that keeps
    loads vectorised (for 2-byte dtypes W = 28 and 14 x 14 = 196 are 8-byte but not 16-byte aligned)."""
    for elements in (16 // itemsize, 8 // itemsize):
        if W % elements == 0:
            return elements
    return 1


def size_class(H, W, itemsize=4):
    """What of a map's size the compiled kernels depend on: path, tile width and (rows) W's alignment.

    Three 'plane' classes (tiles of 64 pixels, maps 16-byte, 8-byte or not aligned; BLOCK_N follows the
    batch: 16, 32 or 64 images) and 12 'rows' ones (tiles of 16, 32 or 64 columns or 32-column tiles with
    a halo, each with rows 16-byte, 8-byte or not aligned; BLOCK_M follows the rows of all images, see
    :func:`row_block`) per dtype and K; the weight gradient has the alignment and map size (up to 256
    pixels or more) as classes. :data:`CLASS_REPRESENTATIVES` has one map of each. The alignment tells
    the compiler that W (H*W for 'plane') is a multiple of the vector, so that masked row loads stay
    vectorised with W a runtime value.
    """
    if H * W <= 256:
        return 'plane', 64, _row_alignment(H * W, itemsize)
    align = _row_alignment(W, itemsize)
    if W > 64:
        return 'rows-halo', 32, align
    return 'rows', max(16, _pow2(W)), align


# One (N, H, W) of every size class (and of the weight gradient's map-size classes): the first call for a
# kernel size and dtype compiles them all, so that no later map size waits for a compile.
# Widths w, w - 4 and w - 2 with w a multiple of 8 give every alignment class of 4- and 2-byte dtypes;
# the maps of 132-144 pixels the weight gradient's per-image classes of 2-byte dtypes (W 16, 12 and 13);
# 32 and 320 rows in all both row blocks of every 'rows' tile.
CLASS_REPRESENTATIVES = ([(n, 7, s) for n in (16, 32, 64) for s in (7, 8, 4, 2)]
                         + [(16, 9, 16), (16, 11, 12), (16, 11, 13)]
                         + [(n, h, w - d) for n, h in ((1, 32), (4, 80))
                            for w in (16, 32, 64, 96) for d in (1, 0, 4, 2)])


def row_block(rows, wide):
    """BLOCK_M of the 'rows' kernel for ``rows`` = N * H rows in all: 256 (128 for one 64-column tile, ``wide``),
    halved where the rows fill at most half of that. Rows past the last image are masked loads and wasted
    products: at 2 x 800 x 1216 (H200, bf16) halving took the stride-16 map (100 rows, halo tiles) from 0.248 to
    0.140 ms per K=27 forward and the stride-32 one (50 rows, one 64-column tile) from 0.178 to 0.108 at K=13,
    while the maps of 200 and 400 rows were fastest with whole blocks.
    """
    block = 128 if wide else 256
    return block // 2 if rows <= block // 2 else block


def _precision(dtype, allow_tf32):
    return 'tf32' if dtype != torch.float32 or allow_tf32 else 'tf32x3'


@functools.lru_cache(maxsize=4096)
def conv_config(N, H, W, K, itemsize, kernel=None, block_n=None, block_m=None, block_wo=None, num_warps=None,
                num_stages=None):
    """Kernel and tile sizes for :func:`launch_conv`; defaults from the H100 sweeps in docs/dwconv_notes.md.

    Maps of up to 256 pixels take the 'plane' kernel: the whole conv of one channel is a
    (H*W) x (H*W) matrix, applied to BLOCK_N images in one product. Larger maps take the 'rows' kernel,
    BLOCK_M rows (of one or several images) at a time. Up to 64 columns a tile spans the whole width,
    so input columns need no halo; wider maps are cut into BLOCK_WO-column tiles that read a
    16-aligned halo of input columns on both sides. Only size classes enter the result, never H or W.
    """
    kernel = kernel or size_class(H, W)[0].split('-')[0]
    if kernel == 'plane':
        return dict(kernel='plane', BLOCK_N=block_n or max(16, min(64, _pow2(N))), BLOCK_R=64,
                    ALIGN=_row_alignment(H * W, itemsize), num_warps=num_warps or 4,
                    num_stages=num_stages or (1 if itemsize == 4 else 2))
    wide = 32 < W <= 64 and block_wo is None  # one 64-column tile: fp32 tiles fill shared memory
    block_m = block_m or row_block(N * H, wide)
    num_stages = num_stages or (3 if itemsize == 4 and not wide else 2)
    if W > 64 or block_wo is not None:
        block_wo = block_wo or 32
        col_off = -(-(K // 2) // 16) * 16
        block_wi = _pow2(col_off + block_wo + K // 2)
    else:
        block_wo = block_wi = max(16, _pow2(W))
        col_off = 0
    return dict(kernel='rows', BLOCK_M=block_m, BLOCK_WO=block_wo, BLOCK_WI=block_wi, COL_OFF=col_off,
                ALIGN=_row_alignment(W, itemsize), num_warps=num_warps or (4 if block_m == 64 else 8),
                num_stages=num_stages)


@functools.lru_cache(maxsize=4096)
def wgrad_config(N, C, H, W, K, itemsize, sms, block_t=128, waves=16, num_warps=4, num_stages=None,
                 per_image=None):
    """Split of the T = N*H*W reduction: enough programs for ``waves`` per SM, each >= 4 chunks of BLOCK_T
    (PROGRAMS programs per channel, T_PER_PROG positions each).

    ``per_image``: every chunk lies inside one image (each image's positions padded to whole chunks), so
    that the input tile's rows are contiguous and aligned and its loads can be vectorised. By default on
    maps of more than 256 pixels, where the padding is small, and for 2-byte dtypes on maps of more than
    128: that took 25-38% off the weight gradient at 56x56 and 128x128, 7-24% at 28x28 and 30% at bf16
    14x14 (H200, dwconv run 6), while at 7x7 (161% padding) it doubled the time and at fp32 14x14 it was
    13% slower.
    """
    per_image = H * W > (256 if itemsize == 4 else 128) if per_image is None else per_image
    chunks = N * -(-H * W // block_t) if per_image else -(-N * H * W // block_t)
    split = max(1, min(-(-waves * sms // C), chunks // 4))
    chunks_per_program = -(-chunks // split)
    num_stages = num_stages or (1 if H * W <= 256 else 2 if itemsize == 4 else 3)
    return dict(PROGRAMS=-(-chunks // chunks_per_program), T_PER_PROG=chunks_per_program * block_t,
                BLOCK_T=block_t, KP=max(16, _pow2(K)), ALIGN=_row_alignment(W, itemsize), PER_IMAGE=per_image,
                num_warps=num_warps, num_stages=num_stages)


@functools.lru_cache(maxsize=None)
def num_sms(device):
    """Multiprocessors of a CUDA device (one stands in for the interpreter's CPU)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == 'cuda' else 1


class _Launch:
    """One call shape's launch plan on one device: kernel, 3-D grid, size and compile-time arguments.

    The sizes hold W divided by the alignment ALIGN that the kernel multiplies it back by (see
    :func:`size_class`): the compiler then proves W's divisibility, which a hint on a kernel argument
    does not give (Triton drops it). ``pointer_dtypes`` are the dtypes of the tensor arguments, part of
    what Triton compiles, so a plan is made for given dtypes.
    """
    __slots__ = ('kernel', 'grid', 'sizes', 'meta', 'pointer_dtypes', 'variant', 'compiled', 'args_after_pointers')

    def __init__(self, kernel, grid, sizes, meta, pointer_dtypes):
        self.kernel, self.grid, self.sizes, self.meta = kernel, grid, sizes, meta
        self.pointer_dtypes = pointer_dtypes
        self.compiled = self.args_after_pointers = None
        self.variant = (kernel.__name__, tuple(map(str, pointer_dtypes)), tuple(sorted(meta.items())))
        variants.add(self.variant)

    def __call__(self, device, pointers):
        """Launch on ``pointers`` (tensors of :attr:`pointer_dtypes` on ``device``)."""
        with _device_guard(device):
            # Triton compiles separately for pointers that are 16-byte aligned (the usual case) and others.
            aligned = direct_launch and all(p.data_ptr() % 16 == 0 for p in pointers)
            if aligned and self.compiled is not None:
                self.launch_compiled(device, pointers)
                return
            compiled = self.kernel[self.grid](*pointers, *self.sizes, **self.meta)
            if aligned:
                self._keep(compiled)

    def launch_compiled(self, device, pointers):
        """What ``JITFunction.run`` does once its cache has the compiled kernel (Triton 3.6 to 3.9).

        That is ``compiled.run(grid, stream, function, packed metadata, launch metadata, hooks, *args)``,
        args every kernel parameter in signature order, constexprs included. The cache look-up is
        skipped: its key is fixed by the plan (dtypes, constexprs, options, the sizes' int32 type, the
        device) and by Triton's debug knobs, taken as fixed for the process, but for the pointers'
        alignment, which :meth:`__call__` checks.
        """
        compiled, grid = self.compiled, self.grid
        args = (*pointers, *self.args_after_pointers)
        stream = _current_stream(device.index)
        hooks = triton.knobs.runtime
        compiled.run(grid[0], grid[1], grid[2], stream, compiled.function, compiled.packed_metadata,
                     compiled.launch_metadata(grid, stream, *args), hooks.launch_enter_hook, hooks.launch_exit_hook,
                     *args)

    def _keep(self, compiled):
        """Keep Triton's compiled kernel for :meth:`launch_compiled`, if laid out as it expects; else stop
        direct launches for the process (another Triton)."""
        global direct_launch
        try:
            names = list(self.kernel.arg_names)
            launcher_params = list(compiled.src.signature)  # its launcher takes one argument per parameter
            compiled.run, compiled.function, compiled.packed_metadata, compiled.launch_metadata
            pre_run_hooks = self.kernel.pre_run_hooks
        except AttributeError:
            direct_launch = False
            return
        constexprs = {name: value for name, value in self.meta.items() if name in names}
        after_sizes = names[len(self.pointer_dtypes) + len(self.sizes):]
        if (launcher_params != names or set(after_sizes) != constexprs.keys() or pre_run_hooks
                or len(self.grid) != 3):
            direct_launch = False
            return
        self.args_after_pointers = (*self.sizes, *(constexprs[name] for name in after_sizes))
        self.compiled = compiled

    def compile(self, device):
        """Compile for the plan's dtypes without launching (sizes do not enter what is compiled)."""
        compile_job(self.job(device))

    def job(self, device):
        """What :meth:`compile` does, as JSON-able data for a compile worker (:func:`compile_job`)."""
        return dict(kernel=self.kernel.__name__, pointer_dtypes=[str(d).split('.')[-1] for d in self.pointer_dtypes],
                    num_sizes=len(self.sizes), grid=list(self.grid), meta=self.meta, device=device.index)


def compile_job(job):
    """Compile one :meth:`_Launch.job` (in this process or a compile worker's) into Triton's caches."""
    kernel = globals()[job['kernel']]
    with _device_guard(torch.device('cuda', job['device'])):
        kernel.warmup(*(getattr(torch, name) for name in job['pointer_dtypes']), *([1] * job['num_sizes']),
                      grid=tuple(job['grid']), **job['meta'])


# Whether launches after a plan's first call the compiled kernel directly (:meth:`_Launch.launch_compiled`);
# turned off for the process where Triton's compiled kernels are not laid out as expected.
direct_launch = triton is not None and not INTERPRET and hasattr(triton, 'knobs')
# Whether the first plan for a (K, dtypes, flip) on a device compiles every size class (CLASS_REPRESENTATIVES) at once.
precompile_size_classes = True
_precompiled = set()
# How many worker processes compile the size classes (0: this process does); unset: this process's share of
# the machine's cores, at most MAX_COMPILE_WORKERS (each worker holds a CUDA context while it runs).
COMPILE_WORKERS_ENV = 'REPLK_DWCONV_COMPILE_WORKERS'
MAX_COMPILE_WORKERS = 8
COMPILE_WORKERS_TIMEOUT_S = 900
# A kernel found in Triton's on-disk cache loads in milliseconds; compiling one takes about 0.6 s. Where a batch's
# first plan, or else its second, loads this fast, the batch is taken as cached and no workers start (they cost
# seconds to start). The second is asked because a process's first load also pays Triton's own start-up (its
# driver and launcher modules): one slow first plan would otherwise send a cached batch to the workers.
CACHE_LOAD_S = 0.2
CACHE_PROBES = 2
_workers_failed = False  # set for the process once a worker failed
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _precompile(keys, device):
    """On the first call for any of these plan keys on a CUDA device, compile the plans of every size class.

    ``keys`` are ``(make_plan, *args)``: :func:`_conv_launch` or :func:`_wgrad_launch` and their arguments
    between the shape and the device. Compiling a batch at once lets worker processes share it.
    """
    global precompile_size_classes
    keys = [key for key in keys if (key, device) not in _precompiled]
    if INTERPRET or not precompile_size_classes or device.type != 'cuda' or not keys:
        return
    _precompiled.update((key, device) for key in keys)
    try:
        plans = {}
        for make_plan, *args in keys:
            for N, H, W in CLASS_REPRESENTATIVES:
                plan = make_plan((N, 1, H, W), *args, device)
                plans.setdefault(plan.variant, plan)
        rest = list(plans.values())
        for _ in range(min(CACHE_PROBES, len(rest))):
            start = time.perf_counter()
            rest.pop(0).compile(device)
            cached = time.perf_counter() - start <= CACHE_LOAD_S
            if cached:
                break
        if not cached:  # compiled, not loaded: the rest are not cached either
            compile_in_workers(rest, device)
        for plan in rest:  # where the workers compiled, Triton's on-disk cache has every kernel
            plan.compile(device)
    except (AttributeError, TypeError) as exc:  # a Triton without warmup(dtype, ...): compile on first use
        warnings.warn(f'replk_mm.ops: cannot compile size classes ahead ({exc}); each compiles on first use')
        precompile_size_classes = False


def precompile_convs(convs, input_dtype, device, backward):
    """Compile, in one batch, the size classes of every conv in ``convs`` (``(K, bias dtype or None)``) for
    inputs of ``input_dtype`` on ``device``, with ``backward`` their gradients' too: the plans that the convs'
    first calls would otherwise compile in one batch per kernel size, each starting its own workers.
    """
    if input_dtype not in DTYPES:
        return
    allow_tf32 = torch.backends.cudnn.allow_tf32
    _precompile([key for K, bias_dtype in sorted(convs, key=str) if covers_kernel_size(K)
                 for key in _first_call_keys(K, (input_dtype, bias_dtype), False, allow_tf32,
                                             backward)], device)


def _first_call_keys(K, dtypes, flip, allow_tf32, backward):
    """The plan keys whose size classes a conv's first call compiles: its own, with ``backward`` those of its
    input gradient (this conv turned, on the output gradient, of the input's dtype, no bias) and weight gradient."""
    keys = [(_conv_launch, K, dtypes, flip, allow_tf32)]
    if backward:
        keys += [(_conv_launch, K, (dtypes[0], None), True, allow_tf32),
                 (_wgrad_launch, K, (dtypes[0], dtypes[0]), allow_tf32)]
    return keys


def compile_workers():
    """Worker processes for :func:`compile_in_workers`: ``REPLK_DWCONV_COMPILE_WORKERS`` if set, else the
    cores of this process (over ``LOCAL_WORLD_SIZE`` processes per machine), at most MAX_COMPILE_WORKERS."""
    value = os.environ.get(COMPILE_WORKERS_ENV)
    if value is not None:
        if not value.strip().isdigit():
            raise ValueError(f'{COMPILE_WORKERS_ENV}: expected a number of compile worker processes (0: none), '
                             f'got {value!r}')
        return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    return min(MAX_COMPILE_WORKERS, cores // max(1, int(os.environ.get('LOCAL_WORLD_SIZE', '1'))))


def compile_in_workers(plans, device, workers=None):
    """Compile ``plans`` in worker processes at once, into Triton's on-disk cache, where this process then finds
    them: Triton compiles one kernel at a time, about 0.6 s each on an H200 host, and a RepLKNet-31B's first
    training step needs about 240. Returns the number of workers that ran (0: none ran, or one failed and the
    plans compile in this process as before; then workers stay off for the process).
    """
    global _workers_failed
    workers = min(compile_workers() if workers is None else workers, len(plans) // 2)
    if workers < 2 or _workers_failed:
        return 0
    jobs = [plan.job(device) for plan in plans]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (_PACKAGE_PARENT, os.environ.get('PYTHONPATH')))))
    with tempfile.TemporaryDirectory(prefix='replk_mm_compile_') as tmp:
        procs = []
        for i in range(workers):
            job_file = os.path.join(tmp, f'jobs{i}.json')
            with open(job_file, 'w') as f:
                json.dump(jobs[i::workers], f)
            with open(os.path.join(tmp, f'worker{i}.log'), 'w') as log:
                procs.append(subprocess.Popen([sys.executable, '-m', 'replk_mm.ops.compile_worker', job_file],
                                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env))
        deadline = time.monotonic() + COMPILE_WORKERS_TIMEOUT_S
        failed = []
        for i, proc in enumerate(procs):
            try:
                returncode = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                returncode = f'killed after {COMPILE_WORKERS_TIMEOUT_S} s'
            if returncode != 0:
                with open(os.path.join(tmp, f'worker{i}.log')) as log:
                    failed.append(f'worker {i} (exit {returncode}): {log.read()[-1500:]}')
    if failed:
        _workers_failed = True
        warnings.warn(f'replk_mm.ops: a kernel compile worker failed, so this process compiles the kernels itself '
                      f'(set {COMPILE_WORKERS_ENV}=0 to skip the workers):\n' + '\n'.join(failed))
        return 0
    return workers


@functools.lru_cache(maxsize=4096)
def _conv_launch(shape, K, dtypes, flip, allow_tf32, device, config=None, backward=False):
    """The :class:`_Launch` of one conv call shape; ``dtypes``: the input's (the weight's too, see
    :func:`launch_conv`) and the bias's (None: no bias).

    Without an explicit config, the first plan for a (K, dtypes, flip) compiles every size class, with
    ``backward`` those of its input and weight gradients too.
    """
    if config is None:
        _precompile(_first_call_keys(K, dtypes, flip, allow_tf32, backward), device)
    N, C, H, W = shape
    dtype, bias_dtype = dtypes
    cfg = dict(config or conv_config(N, H, W, K, dtype.itemsize))
    # UPCAST: the interpreter cannot multiply bf16 (see docs/dwconv_notes.md, Testing).
    meta = dict(K=K, FLIP=flip, HAS_BIAS=bias_dtype is not None, PRECISION=_precision(dtype, allow_tf32),
                UPCAST=INTERPRET and dtype == torch.bfloat16)
    if cfg.pop('kernel') == 'plane':
        kernel, w_divisor = _conv_plane_kernel, 1
        grid = (triton.cdiv(N, cfg['BLOCK_N']), C, triton.cdiv(H * W, cfg['BLOCK_R']))
    else:
        kernel, w_divisor = _conv_rows_kernel, cfg['ALIGN']
        grid = (triton.cdiv(N * H, cfg['BLOCK_M']), C, triton.cdiv(W, cfg['BLOCK_WO']))
    meta.update(cfg)
    return _Launch(kernel, grid, (N, C, H, W // w_divisor), meta, (dtype, dtype, bias_dtype or dtype, dtype))


@functools.lru_cache(maxsize=4096)
def _wgrad_launch(shape, K, dtypes, allow_tf32, device, config=None):
    """The :class:`_Launch` of one weight-gradient call shape; ``dtypes``: the input's and the output gradient's."""
    if config is None:
        _precompile([(_wgrad_launch, K, dtypes, allow_tf32)], device)
    N, C, H, W = shape
    dtype = dtypes[0]
    cfg = dict(config or wgrad_config(N, C, H, W, K, dtype.itemsize, num_sms(device)))
    t_per_prog, programs = cfg.pop('T_PER_PROG'), cfg.pop('PROGRAMS')
    meta = dict(K=K, PRECISION=_precision(dtype, allow_tf32), UPCAST=INTERPRET and dtype == torch.bfloat16, **cfg)
    grid = (C, programs, 1)
    return _Launch(_wgrad_kernel, grid, (N, C, H, W // cfg['ALIGN'], t_per_prog), meta, (*dtypes, torch.float32))


def launch_conv(x, w, bias=None, flip=False, config=None, backward=False):
    """Depthwise conv of contiguous NCHW ``x`` with contiguous ``w`` (C, 1, K, K), turned 180 degrees if ``flip``.

    The weight and bias may have any float dtype: a weight of another dtype than x's is cast to it (see the
    module's docstring), the bias is read as it is. ``backward``: gradients will follow (their kernels compile
    with this one's).
    """
    device = x.device
    if w.dtype != x.dtype:
        w = w.to(x.dtype)
    launch = _conv_launch(x.shape, w.shape[-1], (x.dtype, None if bias is None else bias.dtype), flip,
                          torch.backends.cudnn.allow_tf32, device, config and _Frozen(config), backward)
    y = torch.empty_like(x)
    launch(device, (x, w, x if bias is None else bias, y))
    return y


def launch_weight_grad(x, gy, K, config=None):
    """Weight gradient (C, 1, K, K) in float32 from contiguous NCHW input and output gradient."""
    device = x.device
    launch = _wgrad_launch(x.shape, K, (x.dtype, gy.dtype), torch.backends.cudnn.allow_tf32, device,
                           config and _Frozen(config))
    gw = torch.zeros((x.shape[1], 1, K, K), device=device, dtype=torch.float32)
    launch(device, (x, gy, gw))
    return gw


def _device_guard(device):
    """Triton launches on the current CUDA device: make it the tensors' one (rarely needed, so cheap)."""
    if device.type == 'cuda' and device.index != torch.cuda.current_device():
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def _current_stream(device_index):
    """The stream Triton's own launch takes: its driver's current stream of the device."""
    return triton.runtime.driver.active.get_current_stream(device_index)


class _Frozen(dict):
    """A config dict usable as an lru_cache key (the benchmark's tile sweeps pass explicit configs)."""

    def __hash__(self):
        return hash(tuple(sorted(self.items())))


if triton is not None:

    @triton.jit(do_not_specialize=['N', 'C', 'H', 'W'])
    def _conv_plane_kernel(x_ptr, w_ptr, b_ptr, y_ptr, N, C, H, W, K: tl.constexpr, FLIP: tl.constexpr,
                           HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, ALIGN: tl.constexpr):
        """One channel, BLOCK_N images x BLOCK_R output pixels: y[n, r] = sum_q x[n, q] * M[q, r].

        M[q, r] is the tap joining input pixel q to output pixel r, gathered from the weights (turned
        180 degrees if FLIP); only input pixels within K // 2 rows of the output block are visited.
        """
        P: tl.constexpr = K // 2
        HW = tl.multiple_of(H * W, ALIGN)
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        c = tl.program_id(1)
        r0 = tl.program_id(2) * BLOCK_R
        r = r0 + tl.arange(0, BLOCK_R)
        rh = r // W
        rw = r - rh * W
        n_ok = n < N
        plane = (n * C + c) * HW
        q_lo = tl.maximum(r0 // W - P, 0) * W // BLOCK_R * BLOCK_R
        q_hi = tl.minimum((tl.minimum(r0 + BLOCK_R, HW) - 1) // W + P + 1, H) * W
        acc = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
        for q0 in range(q_lo, q_hi, BLOCK_R):
            q = q0 + tl.arange(0, BLOCK_R)
            qh = q // W
            # Tap offsets; pixels past the map get a row offset no tap has, so one unsigned compare masks them.
            dh = tl.where(q < HW, qh, 1 << 29)[:, None] - (rh - P)[None, :]
            dw = (q - qh * W)[:, None] - (rw - P)[None, :]
            m_ok = (dh.to(tl.uint32) < K) & (dw.to(tl.uint32) < K)
            w_idx = dh * K + dw
            if FLIP:  # tap (K-1-kh, K-1-kw)
                w_idx = K * K - 1 - w_idx
            m = tl.load(w_ptr + c * K * K + w_idx, mask=m_ok, other=0.)
            a = tl.load(x_ptr + plane[:, None] + q[None, :], mask=n_ok[:, None] & (q < HW)[None, :], other=0.)
            if UPCAST:
                a, m = a.to(tl.float32), m.to(tl.float32)
            acc = tl.dot(a, m, acc, input_precision=PRECISION)

        if HAS_BIAS:
            acc += tl.load(b_ptr + c).to(tl.float32)
        y_ok = n_ok[:, None] & (r < HW)[None, :]
        tl.store(y_ptr + plane[:, None] + r[None, :], acc.to(y_ptr.dtype.element_ty), mask=y_ok)

    @triton.jit(do_not_specialize=['N', 'C', 'H', 'W_BY_ALIGN'])
    def _conv_rows_kernel(x_ptr, w_ptr, b_ptr, y_ptr, N, C, H, W_BY_ALIGN, K: tl.constexpr, FLIP: tl.constexpr,
                          HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_WO: tl.constexpr, BLOCK_WI: tl.constexpr,
                          COL_OFF: tl.constexpr, ALIGN: tl.constexpr):
        """One channel, BLOCK_M rows (numbered over all images) x BLOCK_WO columns: sum over kh of X_kh @ T_kh.

        T_kh is gathered from the weights (turned 180 degrees if FLIP).
        """
        P: tl.constexpr = K // 2
        W = W_BY_ALIGN * ALIGN  # a multiple of ALIGN the compiler can see: vectorised masked loads
        m0 = tl.program_id(0) * BLOCK_M
        c = tl.program_id(1)
        j0 = tl.program_id(2) * BLOCK_WO
        i0 = j0 - COL_OFF

        m = m0 + tl.arange(0, BLOCK_M)
        n = m // H
        h = m - n * H
        row_ok = m < N * H
        row_off = ((n * C + c) * H + h) * W
        ii = tl.arange(0, BLOCK_WI)
        jj = tl.arange(0, BLOCK_WO)
        col_in = i0 + ii
        col_in_ok = (col_in >= 0) & (col_in < W)
        # Tap of T_kh[i, j]: the input column minus the output column, plus p.
        tap = ii[:, None] - jj[None, :] + (P - COL_OFF)
        tap_ok = (tap >= 0) & (tap < K)

        # Kernel rows whose input rows h + kh - p meet the image for some row of the block; a block
        # that spans two images may hold any row.
        m_last = tl.minimum(m0 + BLOCK_M, N * H) - 1
        one_image = m0 // H == m_last // H
        h_min = tl.where(one_image, m0 % H, 0)
        h_max = tl.where(one_image, m_last % H, H - 1)
        kh_lo = tl.maximum(P - h_max, 0)
        kh_hi = tl.minimum(P + H - h_min, K)
        acc = tl.zeros((BLOCK_M, BLOCK_WO), dtype=tl.float32)
        for kh in range(kh_lo, kh_hi):
            w_idx = kh * K + tap
            if FLIP:  # tap (K-1-kh, K-1-kw)
                w_idx = K * K - 1 - w_idx
            t = tl.load(w_ptr + c * K * K + w_idx, mask=tap_ok, other=0.)
            r = h + (kh - P)
            a_ok = (row_ok & (r >= 0) & (r < H))[:, None] & col_in_ok[None, :]
            a = tl.load(x_ptr + (row_off + (kh - P) * W)[:, None] + col_in[None, :], mask=a_ok, other=0.)
            if UPCAST:
                a, t = a.to(tl.float32), t.to(tl.float32)
            acc = tl.dot(a, t, acc, input_precision=PRECISION)

        if HAS_BIAS:
            acc += tl.load(b_ptr + c).to(tl.float32)
        col_out = j0 + jj
        y_ok = row_ok[:, None] & (col_out < W)[None, :]
        tl.store(y_ptr + row_off[:, None] + col_out[None, :], acc.to(y_ptr.dtype.element_ty), mask=y_ok)

    @triton.jit(do_not_specialize=['N', 'C', 'H', 'W_BY_ALIGN', 'T_PER_PROG'])
    def _wgrad_kernel(x_ptr, gy_ptr, gw_ptr, N, C, H, W_BY_ALIGN, T_PER_PROG, K: tl.constexpr, PRECISION: tl.constexpr,
                      UPCAST: tl.constexpr, KP: tl.constexpr, BLOCK_T: tl.constexpr, ALIGN: tl.constexpr,
                      PER_IMAGE: tl.constexpr):
        """gw[c] += X_s[kh, t] @ GY_s[t, kw] over this program's slice of t = (n, h, i).

        PER_IMAGE numbers the positions image by image, each image padded to whole BLOCK_T chunks, so
        that a chunk lies in one image: its input rows are then contiguous and aligned.
        """
        P: tl.constexpr = K // 2
        W = W_BY_ALIGN * ALIGN
        HW = H * W
        HW_PADDED = tl.cdiv(HW, BLOCK_T) * BLOCK_T
        c = tl.program_id(0)
        if PER_IMAGE:
            total = N * HW_PADDED
        else:
            total = N * HW
        t_start = tl.multiple_of(tl.program_id(1) * T_PER_PROG, BLOCK_T)
        t_end = tl.minimum(t_start + T_PER_PROG, total)
        k = tl.arange(0, KP)
        acc = tl.zeros((KP, KP), dtype=tl.float32)
        for t0 in range(t_start, t_end, BLOCK_T):
            if PER_IMAGE:
                n = t0 // HW_PADDED
                hw = t0 - n * HW_PADDED + tl.arange(0, BLOCK_T)
                t_ok = hw < HW
            else:
                t = t0 + tl.arange(0, BLOCK_T)
                n = t // HW
                hw = t - n * HW
                t_ok = t < t_end
            base = (n * C + c) * HW + hw
            # X_s[kh, t] = x[n, c, h + kh - p, i]: in the image iff hw + (kh - p) * W is.
            shift = hw[None, :] + (k[:, None] - P) * W
            a_ok = t_ok[None, :] & (shift >= 0) & (shift < HW) & (k[:, None] < K)
            a = tl.load(x_ptr + base[None, :] + (k[:, None] - P) * W, mask=a_ok, other=0.)
            # GY_s[t, kw] = gy[n, c, h, i - kw + p]
            col = (hw % W)[:, None] - k[None, :] + P
            b_ok = t_ok[:, None] & (col >= 0) & (col < W) & (k[None, :] < K)
            b = tl.load(gy_ptr + base[:, None] + (P - k[None, :]), mask=b_ok, other=0.)
            if UPCAST:
                a, b = a.to(tl.float32), b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        gw_ok = (k[:, None] < K) & (k[None, :] < K)
        tl.atomic_add(gw_ptr + c * K * K + k[:, None] * K + k[None, :], acc, mask=gw_ok, sem='relaxed')
