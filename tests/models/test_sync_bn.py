"""SyncBatchNormWithoutHostSync: nn.SyncBatchNorm's results without the forward's host synchronisation."""
import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmcv.cnn import build_norm_layer
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope
from torch import nn

import replk_mm  # noqa: F401  (registers the norm type)
from replk_mm.models import RepLKNet, SyncBatchNormWithoutHostSync

from conftest import TINY_ARCH

NORM_CFG = dict(type='SyncBatchNormWithoutHostSync', requires_grad=True)


def test_mm_configs_build_it_and_mmengine_reverts_it_to_bn_for_one_process():
    with DefaultScope.overwrite_default_scope('mmseg'):
        name, layer = build_norm_layer(NORM_CFG, 16)
    assert name == 'bn' and type(layer) is SyncBatchNormWithoutHostSync
    layer.weight.data.uniform_(0.5, 1.5)
    reverted = revert_sync_batchnorm(nn.Sequential(layer))[0]
    assert not isinstance(reverted, nn.SyncBatchNorm)
    assert torch.equal(reverted.weight, layer.weight)


def test_without_a_process_group_it_is_batch_norm():
    torch.manual_seed(0)
    ours, reference = SyncBatchNormWithoutHostSync(8), nn.BatchNorm2d(8)
    ours.weight.data.uniform_(0.5, 1.5)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 5, 7) * 3 + 1
    torch.testing.assert_close(ours(x), reference(x))
    torch.testing.assert_close(ours.running_var, reference.running_var)
    assert int(ours.num_batches_tracked) == 1


def test_replknet_takes_it_as_its_norm():
    model = RepLKNet(arch=TINY_ARCH, norm_cfg=NORM_CFG)
    norms = [m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert norms and all(type(m) is SyncBatchNormWithoutHostSync for m in norms)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _compare_on_two_gpus(rank, port):
    """Each rank feeds its own batch (rank 0 an empty one in the second case) through both layers."""
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group('nccl', rank=rank, world_size=2, device_id=torch.device('cuda', rank),
                            timeout=datetime.timedelta(seconds=60))
    try:
        for batch_sizes in ((2, 3), (0, 3)):
            torch.manual_seed(0)
            reference = nn.SyncBatchNorm(16).cuda()
            reference.weight.data.uniform_(0.5, 1.5)
            reference.bias.data.uniform_(-1, 1)
            ours = SyncBatchNormWithoutHostSync(16).cuda()
            ours.load_state_dict(reference.state_dict())
            torch.manual_seed(1 + rank)
            x = torch.randn(batch_sizes[rank], 16, 9, 11, device='cuda') * 2 + rank
            grad = torch.randn_like(x)
            results = []
            for layer in (reference, ours):
                xi = x.clone().requires_grad_()
                with torch.autocast('cuda', dtype=torch.bfloat16):
                    y = layer(xi.bfloat16())
                y.float().backward(grad)
                results.append((y.float(), xi.grad, layer.weight.grad, layer.running_mean, layer.running_var))
            for got, want in zip(results[1], results[0]):  # grads of an empty batch: None in both
                assert (got is None) == (want is None)
                if want is not None:
                    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        # The point: the reference's forward reads data back to the host, ours does not.
        x = torch.randn(2, 16, 9, 11, device='cuda')
        torch.cuda.set_sync_debug_mode('error')
        ours(x)
        with pytest.raises(RuntimeError, match='synchroniz'):
            reference(x)
        torch.cuda.set_sync_debug_mode('default')
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs two CUDA devices (NCCL)')
def test_two_gpu_results_equal_sync_batch_norm_and_the_forward_never_waits():
    # start_processes raises the error of a failing rank
    mp.start_processes(_compare_on_two_gpus, args=(_free_port(),), nprocs=2, start_method='spawn')
