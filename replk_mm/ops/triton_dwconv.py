"""Triton kernels for the depthwise large-kernel convolution (forward, input and weight gradients).

A depthwise KxK conv does 2*K^2 FLOPs per output and PyTorch runs it on CUDA cores, far below their
rate. Every pass here is recast as small matrix products so that ``tl.dot`` runs on tensor cores:

* forward, and the input gradient (the same conv with the kernel turned 180 degrees): for one
  channel and kernel row ``kh``, a block of output rows is ``X[rows h + kh - p] @ T_kh``, where
  ``T_kh[i, j] = w[kh, i - j + p]`` is a banded (Toeplitz) matrix gathered from the K weights of
  that row ('rows' kernel). Kernel rows that only meet zero padding for the whole block are
  skipped. Maps of at most 256 pixels instead gather the whole conv of a channel as one
  (H*W) x (H*W) matrix and apply it to a block of images in a single product ('plane' kernel).
* weight gradient: ``gw[kh, kw] = sum_t x[h + kh - p, i] * gy[h, i - kw + p]`` over
  ``t = (n, h, i)``. Both factors are shifted views of the flattened maps, so per channel it is one
  ``[K, T] @ [T, K]`` product, split over ``T`` across programs and summed with fp32 atomics.

All products accumulate in fp32. float32 operands go through the tensor cores as tf32 when
``torch.backends.cudnn.allow_tf32`` is set (PyTorch's default for convolutions), else as tf32x3
(three tf32 products, about float32 accuracy).
"""
import contextlib
import functools
import os

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


def available():
    """Whether Triton kernels can run in this process (on CUDA, or on the CPU in the interpreter)."""
    return triton is not None and (INTERPRET or torch.cuda.is_available())


def supports(input, weight):
    """Whether the kernels cover this call (dtype, device, shape)."""
    if not available() or input.dtype not in DTYPES or weight.dtype not in DTYPES:
        return False
    kernel = weight.shape[-1]
    if weight.shape[-2] != kernel or kernel % 2 == 0 or kernel > MAX_KERNEL:
        return False
    if input.numel() == 0 or input.numel() >= 2**31:  # int32 offsets in the kernels
        return False
    on_cuda = input.is_cuda and weight.is_cuda
    on_cpu = INTERPRET and input.device.type == 'cpu' and weight.device.type == 'cpu'
    return on_cuda or on_cpu


def depthwise_conv2d_triton(input, weight, bias=None):
    """Depthwise conv (stride 1, padding K//2) with Triton forward and backward.

    The output has the input's dtype; the weight (and bias) may be of another float dtype, as under
    autocast, and their gradients come back in their own dtypes.
    """
    return _DepthwiseConv2d.apply(input, weight, bias)


def _on(device):
    """Triton launches on the current CUDA device: make it the tensors' one (rarely needed, so cheap)."""
    if device.type == 'cuda' and device.index != torch.cuda.current_device():
        return torch.cuda.device(device)
    return contextlib.nullcontext()


class _DepthwiseConv2d(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input, weight, bias):
        x = input.contiguous()
        w = weight.to(x.dtype).contiguous()
        ctx.save_for_backward(x, w)
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        with _on(x.device):
            return conv(x, w, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        gy = grad_out.to(x.dtype).contiguous()
        grad_input = grad_weight = grad_bias = None
        with _on(x.device):
            if ctx.needs_input_grad[0]:  # the conv with the kernel turned 180 degrees
                grad_input = conv(gy, w.flip((-2, -1)).contiguous())
            if ctx.needs_input_grad[1]:
                grad_weight = conv_wgrad(x, gy, w.shape[-1]).to(ctx.weight_dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_bias = gy.sum((0, 2, 3), dtype=torch.float32).to(ctx.bias_dtype)
        return grad_input, grad_weight, grad_bias


def _dot_args(dtype):
    """tl.dot settings: tf32 mode for float32; UPCAST because the interpreter cannot multiply bf16."""
    return dict(PRECISION=_precision(dtype), UPCAST=INTERPRET and dtype == torch.bfloat16)


def _precision(dtype):
    if dtype != torch.float32 or torch.backends.cudnn.allow_tf32:
        return 'tf32'
    return 'tf32x3'


def _pow2(n):
    return 1 << (max(int(n), 1) - 1).bit_length()


@functools.lru_cache(maxsize=None)
def conv_config(N, H, W, K, itemsize, kernel=None, block_m=None, block_n=None, block_wo=None, num_warps=None,
                num_stages=None):
    """Kernel and tile sizes for :func:`conv`; defaults from the H100 sweeps in docs/dwconv_notes.md.

    Maps of up to 256 pixels take the 'plane' kernel: the whole conv of one channel is a
    (H*W) x (H*W) matrix, applied to BLOCK_N images in one product. Larger maps take the 'rows' kernel,
    BLOCK_M rows (whole images' rows where they fit) at a time. Up to 64 columns a tile spans the whole
    width, so input columns need no halo; wider maps are cut into BLOCK_WO-column tiles that read a
    16-aligned halo of input columns on both sides.
    """
    kernel = kernel or ('plane' if H * W <= 256 else 'rows')
    if kernel == 'plane':
        block_r = max(16, min(64, _pow2(H * W)))
        return dict(kernel='plane', BLOCK_N=block_n or max(16, min(64, _pow2(N))), BLOCK_Q=block_r,
                    BLOCK_R=block_r, num_warps=num_warps or 4, num_stages=num_stages or (1 if itemsize == 4 else 2))
    wide = 48 <= W <= 64 and block_wo is None  # one 64-column tile: fp32 tiles fill shared memory
    block_m = block_m or (128 if wide else 256)
    num_stages = num_stages or (3 if itemsize == 4 and not wide else 2)
    block_h = min(_pow2(H), block_m)
    if W > 64 or block_wo is not None:
        block_wo = block_wo or 32
        col_off = triton.cdiv(K // 2, 16) * 16
        block_wi = _pow2(col_off + block_wo + K // 2)
    else:
        block_wo = block_wi = max(16, _pow2(W))
        col_off = 0
    return dict(kernel='rows', BLOCK_H=block_h, IMGS=max(1, block_m // block_h), BLOCK_WO=block_wo,
                BLOCK_WI=block_wi, COL_OFF=col_off, num_warps=num_warps or 8, num_stages=num_stages)


def conv(x, w, bias=None, config=None):
    """Depthwise conv of contiguous NCHW ``x`` with contiguous ``w`` (C, 1, K, K) of x's dtype."""
    N, C, H, W = x.shape
    K = w.shape[-1]
    cfg = dict(config or conv_config(N, H, W, K, x.element_size()))
    y = torch.empty_like(x)
    args = (x, w, x if bias is None else bias, y, N, C)
    meta = dict(H=H, W=W, K=K, HAS_BIAS=bias is not None, **_dot_args(x.dtype))
    if cfg.pop('kernel') == 'plane':
        grid = (triton.cdiv(N, cfg['BLOCK_N']), C, triton.cdiv(H * W, cfg['BLOCK_R']))
        _conv_plane_kernel[grid](*args, **meta, **cfg)
    else:
        grid = (triton.cdiv(N, cfg['IMGS']) * triton.cdiv(H, cfg['BLOCK_H']), C, triton.cdiv(W, cfg['BLOCK_WO']))
        _conv_rows_kernel[grid](*args, **meta, **cfg)
    return y


@functools.lru_cache(maxsize=None)
def wgrad_config(N, C, H, W, K, itemsize, sms, block_t=128, waves=16, num_warps=4, num_stages=None):
    """Split of the T = N*H*W reduction: enough programs for ``waves`` per SM, each >= 4 chunks."""
    chunks = triton.cdiv(N * H * W, block_t)
    split = max(1, min(triton.cdiv(waves * sms, C), chunks // 4))
    num_stages = num_stages or (1 if H * W <= 256 else 2 if itemsize == 4 else 3)
    return dict(T_PER_PROG=triton.cdiv(chunks, split) * block_t, BLOCK_T=block_t, KP=max(16, _pow2(K)),
                num_warps=num_warps, num_stages=num_stages)


@functools.lru_cache(maxsize=None)
def num_sms(device):
    """Multiprocessors of a CUDA device (one stands in for the interpreter's CPU)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == 'cuda' else 1


def conv_wgrad(x, gy, K, config=None):
    """Weight gradient (C, 1, K, K) in float32 from contiguous NCHW input and output gradient."""
    N, C, H, W = x.shape
    cfg = config or wgrad_config(N, C, H, W, K, x.element_size(), num_sms(x.device))
    gw = torch.zeros((C, 1, K, K), device=x.device, dtype=torch.float32)
    grid = (C, triton.cdiv(N * H * W, cfg['T_PER_PROG']))
    _wgrad_kernel[grid](x, gy, gw, N, C, H=H, W=W, K=K, **_dot_args(x.dtype), **cfg)
    return gw


if triton is not None:

    @triton.jit
    def _conv_plane_kernel(x_ptr, w_ptr, b_ptr, y_ptr, N, C, H: tl.constexpr, W: tl.constexpr, K: tl.constexpr,
                           HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_R: tl.constexpr):
        """One channel, BLOCK_N images x BLOCK_R output pixels: y[n, r] = sum_q x[n, q] * M[q, r].

        M[q, r] is the tap joining input pixel q to output pixel r, gathered from the weights; only
        input pixels within K // 2 rows of the output block are visited.
        """
        P: tl.constexpr = K // 2
        HW: tl.constexpr = H * W
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        c = tl.program_id(1)
        r0 = tl.program_id(2) * BLOCK_R
        r = r0 + tl.arange(0, BLOCK_R)
        n_ok = n < N
        plane = (n * C + c) * HW
        q_lo = tl.maximum(r0 // W - P, 0) * W // BLOCK_Q * BLOCK_Q
        q_hi = tl.minimum((tl.minimum(r0 + BLOCK_R, HW) - 1) // W + P + 1, H) * W
        acc = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
        for q0 in range(q_lo, q_hi, BLOCK_Q):
            q = q0 + tl.arange(0, BLOCK_Q)
            dh = (q // W)[:, None] - (r // W)[None, :] + P
            dw = (q % W)[:, None] - (r % W)[None, :] + P
            m_ok = (dh >= 0) & (dh < K) & (dw >= 0) & (dw < K) & (q < HW)[:, None]
            m = tl.load(w_ptr + c * K * K + dh * K + dw, mask=m_ok, other=0.)
            a = tl.load(x_ptr + plane[:, None] + q[None, :], mask=n_ok[:, None] & (q < HW)[None, :], other=0.)
            if UPCAST:
                a, m = a.to(tl.float32), m.to(tl.float32)
            acc = tl.dot(a, m, acc, input_precision=PRECISION)

        if HAS_BIAS:
            acc += tl.load(b_ptr + c).to(tl.float32)
        y_ok = n_ok[:, None] & (r < HW)[None, :]
        tl.store(y_ptr + plane[:, None] + r[None, :], acc.to(y_ptr.dtype.element_ty), mask=y_ok)

    @triton.jit
    def _conv_rows_kernel(x_ptr, w_ptr, b_ptr, y_ptr, N, C, H: tl.constexpr, W: tl.constexpr, K: tl.constexpr,
                          HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                          BLOCK_H: tl.constexpr, IMGS: tl.constexpr, BLOCK_WO: tl.constexpr, BLOCK_WI: tl.constexpr,
                          COL_OFF: tl.constexpr):
        """One channel, IMGS images x BLOCK_H rows x BLOCK_WO columns: sum over kh of X_kh @ T_kh."""
        P: tl.constexpr = K // 2
        H_BLOCKS: tl.constexpr = (H + BLOCK_H - 1) // BLOCK_H
        n0 = tl.program_id(0) // H_BLOCKS * IMGS
        h0 = tl.program_id(0) % H_BLOCKS * BLOCK_H
        c = tl.program_id(1)
        j0 = tl.program_id(2) * BLOCK_WO
        i0 = j0 - COL_OFF

        m = tl.arange(0, IMGS * BLOCK_H)
        n = n0 + m // BLOCK_H
        h = h0 + m % BLOCK_H
        row_ok = (n < N) & (h < H)
        row_off = ((n * C + c) * H + h) * W
        ii = tl.arange(0, BLOCK_WI)
        jj = tl.arange(0, BLOCK_WO)
        col_in = i0 + ii
        col_in_ok = (col_in >= 0) & (col_in < W)
        # Tap of T_kh[i, j]: the input column minus the output column, plus p.
        tap = ii[:, None] - jj[None, :] + (P - COL_OFF)
        tap_ok = (tap >= 0) & (tap < K)

        # Kernel rows whose input rows h + kh - p meet the image for some row of the block.
        kh_lo = tl.maximum(P - (tl.minimum(h0 + BLOCK_H, H) - 1), 0)
        kh_hi = tl.minimum(P + H - h0, K)
        acc = tl.zeros((IMGS * BLOCK_H, BLOCK_WO), dtype=tl.float32)
        for kh in range(kh_lo, kh_hi):
            t = tl.load(w_ptr + c * K * K + kh * K + tap, mask=tap_ok, other=0.)
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

    @triton.jit
    def _wgrad_kernel(x_ptr, gy_ptr, gw_ptr, N, C, T_PER_PROG, H: tl.constexpr, W: tl.constexpr, K: tl.constexpr,
                      PRECISION: tl.constexpr, UPCAST: tl.constexpr, KP: tl.constexpr, BLOCK_T: tl.constexpr):
        """gw[c] += X_s[kh, t] @ GY_s[t, kw] over this program's slice of t = (n, h, i)."""
        P: tl.constexpr = K // 2
        HW: tl.constexpr = H * W
        c = tl.program_id(0)
        total = N * HW
        t_start = tl.program_id(1) * T_PER_PROG
        t_end = tl.minimum(t_start + T_PER_PROG, total)
        k = tl.arange(0, KP)
        acc = tl.zeros((KP, KP), dtype=tl.float32)
        for t0 in range(t_start, t_end, BLOCK_T):
            t = t0 + tl.arange(0, BLOCK_T)
            n = t // HW
            hw = t % HW
            base = (n * C + c) * HW + hw
            t_ok = t < t_end
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
