"""SyncBN whose training forward never waits for the GPU, for host-bound data-parallel steps.

PyTorch's ``SyncBatchNorm`` gathers every process's batch statistics and then drops the processes whose input
was empty with a boolean mask (``count_all[mask]``). The mask's result has a data-dependent size, so every
layer's forward blocks the host until the GPU has caught up (pytorch/pytorch#78549). RepLKNet-31B has about 200
BatchNorms: at 2 images per GPU, where the host's launches set the pace, these waits serialise launch and
execution. Here the gathered rows are instead sorted by count, processes with data first, and an empty process
sends a zero count with finite statistics; the CUDA merge that follows then gives every empty process zero
weight, which is what the mask did, without reading anything back. The backward is PyTorch's (it never waited),
but for an empty process: PyTorch's sends zeros in the input's dtype there while the other processes send their
sums in the statistics' (float32 for 2-byte inputs), so under autocast the collective would not match across
processes (its forward does the same; both hang). Both send the statistics' dtype here. With no host waits, CUDA
graphs can capture the layer, collectives included (``graph_capturable``, read by ``replk_mm.models.cuda_graph``).
"""
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules._functions import SyncBatchNorm as _TorchSyncBatchNormFunction

from replk_mm.registry import register_model


class _SyncBatchNormFunction(_TorchSyncBatchNormFunction):
    """PyTorch's function with the forward's masking replaced by a sort on the device."""

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, eps, momentum, process_group, world_size):
        if not input.is_contiguous(memory_format=torch.channels_last):
            input = input.contiguous()
        if weight is not None:
            weight = weight.contiguous()
        channels = input.shape[1]
        if input.numel() > 0:
            mean, invstd = torch.batch_norm_stats(input, eps)
            count = torch.full((1,), input.numel() // channels, dtype=mean.dtype, device=mean.device)
            local = torch.cat([mean, invstd, count])
        else:  # finite statistics with a zero count: no weight in the merge
            dtype = torch.promote_types(input.dtype, torch.float32)
            local = torch.cat([torch.zeros(channels, dtype=dtype, device=input.device),
                               torch.ones(channels + 1, dtype=dtype, device=input.device)])
            local[-1] = 0
        gathered = torch.empty(world_size, local.numel(), dtype=local.dtype, device=local.device)
        dist.all_gather_into_tensor(gathered, local, process_group)
        # The merge divides by the count so far, which is zero until the first process with data: put those first.
        gathered = gathered[gathered[:, -1].argsort(descending=True)]
        mean_all, invstd_all, count_all = gathered.split([channels, channels, 1], dim=1)
        counts = count_all.reshape(-1)
        if running_mean is not None and counts.dtype != running_mean.dtype:
            counts = counts.to(running_mean.dtype)
        mean, invstd = torch.batch_norm_gather_stats_with_counts(
            input, mean_all, invstd_all, running_mean, running_var, momentum, eps, counts)
        ctx.save_for_backward(input, weight, mean, invstd, count_all.to(torch.int32))
        ctx.process_group = process_group
        if input.numel() == 0:
            return torch.empty_like(input)
        return torch.batch_norm_elemt(input, weight, bias, mean, invstd, eps)

    @staticmethod
    def backward(ctx, grad_output):
        saved_input, _, mean, _, _ = ctx.saved_tensors
        if saved_input.numel() > 0 or not ctx.needs_input_grad[0]:
            return _TorchSyncBatchNormFunction.backward(ctx, grad_output)
        # An empty process joins the other processes' all-reduce of (sum_dy, sum_dy_xmu), which have mean's dtype.
        zeros = torch.zeros(2 * saved_input.shape[1], dtype=mean.dtype, device=saved_input.device)
        dist.all_reduce(zeros, dist.ReduceOp.SUM, ctx.process_group)
        return (None,) * 9


@register_model
class SyncBatchNormWithoutHostSync(nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` (same arguments, buffers and checkpoints) whose training forward across CUDA
    processes does not block the host. Elsewhere (eval, one process, CPU, gloo, ``momentum=None``) it is
    ``nn.SyncBatchNorm``; mmengine reverts it to plain BN in a single-process run, as it does SyncBN.

    In a config: ``norm_cfg=dict(type='SyncBatchNormWithoutHostSync', requires_grad=True)``.
    """
    graph_capturable = True  # nothing in its training forward or backward waits on the host

    def forward(self, input):
        process_group = self.process_group or (dist.group.WORLD if dist.is_available() and dist.is_initialized()
                                               else None)
        world_size = dist.get_world_size(process_group) if process_group is not None else 1
        if not (self.training and self.momentum is not None and input.device.type == 'cuda' and world_size > 1
                and dist.get_backend(process_group) != 'gloo'):
            return super().forward(input)
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            running_mean, running_var = self.running_mean, self.running_var
        else:
            running_mean = running_var = None
        return _SyncBatchNormFunction.apply(input, self.weight, self.bias, running_mean, running_var, self.eps,
                                            self.momentum, process_group, world_size)
