"""Training forward and backward of a module replayed as CUDA graphs, for inputs of a fixed shape.

At the configs' 2 images per GPU, launching RepLKNet-31B's kernels one by one takes longer on the host than
they take on the GPU (UperNet at 2 x 512x512 on an H200: docs/benchmarks.md). A CUDA graph launches a whole
pass with one call. UperNet trains on crops of one size, so one captured forward and one backward serve
every step. Depends on torch only.
"""
import contextlib
import warnings

import torch


class _Replay(torch.autograd.Function):
    """Autograd node of one captured forward/backward pair; the trainable parameters are its inputs."""

    @staticmethod
    def forward(ctx, graphs, x, *params):
        ctx.graphs = graphs
        graphs.static_input.copy_(x)
        graphs.forward_graph.replay()
        return tuple(out.detach() for out in graphs.static_outputs)

    @staticmethod
    def backward(ctx, *grad_outputs):
        graphs = ctx.graphs
        for static, grad in zip(graphs.static_grad_outputs, grad_outputs):
            static.copy_(grad)
        graphs.backward_graph.replay()
        # Copies: the next replay overwrites the graph's buffers, and autograd would otherwise keep them as .grad.
        grads = tuple(None if grad is None else grad.clone() for grad in graphs.static_grads)
        return (None, None, *grads)


@contextlib.contextmanager
def _trainable_parameters_as_new_leaves(module, params):
    """Within the block, ``module``'s trainable parameters are new leaf tensors on the same storage; yields the
    stand-ins of ``params``, in order.

    DDP keeps every parameter's gradient accumulator, made on the stream that was current when it wrapped the model
    (the legacy default stream, in mmengine). A backward captured into the parameters themselves would make that
    stream wait on the capturing one, which CUDA refuses (cudaErrorStreamCaptureImplicit: seen with DDP even in one
    process). The captured passes differentiate with respect to the stand-ins, whose accumulators are made inside
    the capture; a replay hands its gradients to the real parameters outside it.
    """
    stand_ins = {}
    slots = [(owner, name, param) for owner in module.modules() for name, param in owner._parameters.items()
             if param is not None and param.requires_grad]
    try:
        for owner, name, param in slots:
            if param not in stand_ins:  # a parameter tied to several modules gets one stand-in
                stand_ins[param] = torch.nn.Parameter(param.detach())
            owner._parameters[name] = stand_ins[param]
        yield tuple(stand_ins[param] for param in params)
    finally:
        for owner, name, param in slots:
            owner._parameters[name] = param


class _CapturedPair:
    """Forward and backward graphs of one input shape, dtype and autocast setting, in one memory pool."""

    def __init__(self, forward_fn, module, x, warmup):
        self.all_params = tuple(module.parameters())
        self.trainable = tuple(param.requires_grad for param in self.all_params)
        self.params = tuple(param for param in self.all_params if param.requires_grad)
        self.static_input = x.detach().clone()
        # Warm-up on a side stream: cuDNN and Triton choose and compile kernels, lazy state is made, before
        # the capture, which must not meet any of it. It runs real steps: the buffers (BN statistics) are
        # put back afterwards, so that the first replay updates them once, as an eager step would.
        saved_buffers = [(buffer, buffer.clone()) for buffer in module.buffers()]
        with _trainable_parameters_as_new_leaves(module, self.params) as params:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(warmup):
                    outputs = forward_fn(self.static_input)
                    torch.autograd.grad(outputs, params, [torch.ones_like(out) for out in outputs],
                                        allow_unused=True)
            # The last warm-up graph holds the stand-ins' gradient accumulators, made on the side stream: freed,
            # the capture makes them anew on its own stream.
            del outputs
            torch.cuda.current_stream().wait_stream(stream)
            self.forward_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.forward_graph):
                self.static_outputs = tuple(forward_fn(self.static_input))
            self.static_grad_outputs = tuple(torch.empty_like(out) for out in self.static_outputs)
            self.backward_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.backward_graph, pool=self.forward_graph.pool()):
                self.static_grads = torch.autograd.grad(self.static_outputs, params, self.static_grad_outputs,
                                                        allow_unused=True)
        for buffer, saved in saved_buffers:
            buffer.copy_(saved)


class GraphedTraining:
    """CUDA graphs of a module's forward and backward, for training steps at up to ``max_shapes`` input shapes.

    A call in training mode with gradients on and a CUDA input replays the graphs of its (shape, dtype,
    autocast) key, captured on the key's first call; any other call, and keys beyond ``max_shapes``, run
    ``forward_fn`` eagerly. The module's parameters must keep their storage after the first capture (move and
    cast the model before training, as mmengine does); which of them are trainable is checked on every call. Replays
    write into the same output tensors: one call's outputs must be used up (backward included) before the
    next call, as they are in a training step. Across processes, SyncBN layers that say ``graph_capturable``
    (``SyncBatchNormWithoutHostSync``) are captured with their collectives; with PyTorch's SyncBN the module runs
    eagerly. The capture's warm-up steps run those collectives, so every process must capture at the same call:
    there, only the first training call captures (the same step everywhere); replays and eager calls then issue
    the same collectives, whatever each process's input shape.

    The holder of this object (the module) passes itself on each call, so that the object holds no module and
    a deep copy of the module (an EMA model, a deploy copy) starts with no graphs.
    """

    def __init__(self, max_shapes=1, warmup=3):
        if max_shapes < 1 or warmup < 1:
            raise ValueError(f'GraphedTraining: max_shapes and warmup must be >= 1, got {max_shapes}, {warmup}')
        self.max_shapes = max_shapes
        self.warmup = warmup
        self.captured = {}
        self.eager_keys = set()  # keys that run eagerly (the reason was warned about once)
        self._warned = set()

    def __deepcopy__(self, memo):
        return GraphedTraining(self.max_shapes, self.warmup)

    def clear(self):
        """Drop every captured graph (the module's structure or storage changed)."""
        self.captured.clear()
        self.eager_keys.clear()

    def eligible(self, module, x):
        """Whether this call may replay: training mode, gradients on, a CUDA input that needs no gradient."""
        return (module.training and torch.is_grad_enabled() and x.is_cuda and not x.requires_grad
                and not torch.compiler.is_compiling())

    def __call__(self, module, forward_fn, x):
        if not self.eligible(module, x):
            return forward_fn(x)
        autocast = torch.is_autocast_enabled('cuda')
        key = (tuple(x.shape), x.dtype, x.device, autocast, torch.get_autocast_dtype('cuda') if autocast else None)
        pair = self.captured.get(key)
        if pair is None:
            if key in self.eager_keys:
                return forward_fn(x)
            reason = self._eager_reason(module, key)
            if reason:
                self.eager_keys.add(key)
                if reason not in self._warned:
                    self._warned.add(reason)
                    warnings.warn(f'{type(module).__name__}(cuda_graph=True): {reason}; running eagerly')
                return forward_fn(x)
            # Autocast's weight-cast cache would hand the capture tensors that die with the autocast region.
            with torch.autocast('cuda', dtype=key[4] or torch.float16, enabled=autocast, cache_enabled=False):
                pair = _CapturedPair(forward_fn, module, x, self.warmup)
            self.captured[key] = pair
        elif tuple(param.requires_grad for param in pair.all_params) != pair.trainable:
            raise RuntimeError(f'{type(module).__name__}(cuda_graph=True): parameters were frozen or unfrozen after '
                               'the CUDA graphs were captured; call clear() on the graphs after changing them')
        return _Replay.apply(pair, x, *pair.params)

    def _eager_reason(self, module, key):
        if len(self.captured) >= self.max_shapes:
            shapes = [captured[0] for captured in self.captured]
            return f'input shape {key[0]} is not one of the {self.max_shapes} captured ({shapes})'
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        sync_norms = [m for m in module.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
        if not (distributed and sync_norms and torch.distributed.get_world_size() > 1):
            return None
        if not all(getattr(m, 'graph_capturable', False) for m in sync_norms):
            return ("PyTorch's SyncBN across processes reads data back to the host in every forward, which a CUDA "
                    "graph cannot capture (norm_cfg type 'SyncBatchNormWithoutHostSync' can be)")
        if self.captured:  # the first training call captures on every process at once; a later one would not
            return (f'across processes only the first training shape is captured ({list(self.captured)[0][0]}): '
                    "a capture's warm-up steps run collectives that the other processes would not join")
        return None
