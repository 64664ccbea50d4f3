"""SyncBatchNormWithoutHostSync: nn.SyncBatchNorm's results without the forward's host synchronisation."""
import types

import pytest
import torch
import torch.distributed as dist
from mmcv.cnn import build_norm_layer
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope
from torch import nn

import replk_mm  # noqa: F401  (registers the norm type)
from replk_mm.models import RepLKNet, SyncBatchNormWithoutHostSync

from conftest import TINY_ARCH, run_on_two_gpus

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


def test_an_empty_process_backward_all_reduces_in_the_statistics_dtype(monkeypatch):
    """The other processes all-reduce float32 sums for a bf16 input; an empty process must send float32 too
    (PyTorch's backward sends its input's dtype: bf16 zeros, a collective that does not match)."""
    from replk_mm.models.sync_bn import _SyncBatchNormFunction
    sent = []
    monkeypatch.setattr(dist, 'all_reduce', lambda tensor, op, group: sent.append(tensor))
    empty, mean = torch.empty(0, 16, 9, 11, dtype=torch.bfloat16), torch.zeros(16)
    ctx = types.SimpleNamespace(saved_tensors=(empty, torch.ones(16), mean, torch.ones(16), torch.zeros(2, 1)),
                                needs_input_grad=(True, True, True) + (False,) * 6, process_group=None)
    assert _SyncBatchNormFunction.backward(ctx, torch.empty_like(empty)) == (None,) * 9
    assert len(sent) == 1 and sent[0].dtype == torch.float32 and sent[0].shape == (32,) and not sent[0].any()


def _synchronises(layer, x):
    """Whether ``layer(x)`` makes the host wait for the GPU (PyTorch's sync debug mode raises where it does)."""
    torch.cuda.set_sync_debug_mode('error')
    try:
        layer(x)
        return False
    except RuntimeError as err:
        if 'synchroniz' not in str(err):
            raise
        return True
    finally:
        torch.cuda.set_sync_debug_mode('default')


def _compare_on_two_gpus(rank):
    """Each rank feeds its own batch (rank 0 an empty one in the second case) through both layers; per
    output, gradient and running statistic, how far ours lies outside assert_close's bound (rtol 1e-5) around
    PyTorch's (None where both are None, as an empty batch's gradients are), and which forward waits."""
    report = dict(excess={}, ours_waits=None, reference_waits=None)
    # The empty batch in float32: PyTorch's function gathers an empty rank's zeros in the input's dtype and the
    # other ranks' statistics in float32, so under bf16 its collective would not match across ranks (it hangs).
    for batch_sizes, dtype in (((2, 3), torch.bfloat16), ((0, 3), torch.float32)):
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
            with torch.autocast('cuda', dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                y = layer(xi.to(dtype))
            y.float().backward(grad)
            results.append((y.float(), xi.grad, layer.weight.grad, layer.running_mean, layer.running_var))
        for name, got, want in zip(('output', 'input grad', 'weight grad', 'running mean', 'running var'),
                                   results[1], results[0]):
            key = f'batches {batch_sizes}: {name}'
            if got is None or want is None:
                report['excess'][key] = 'both None' if got is None and want is None else 'one None'
            elif want.numel():
                report['excess'][key] = float(((got - want).abs() - 1e-5 * want.abs()).max())
    x = torch.randn(2, 16, 9, 11, device='cuda')
    report['ours_waits'] = _synchronises(ours, x)
    report['reference_waits'] = _synchronises(reference, x)
    return report


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs two CUDA devices (NCCL)')
def test_two_gpu_results_equal_sync_batch_norm_and_the_forward_never_waits(tmp_path):
    for rank, report in enumerate(run_on_two_gpus(_compare_on_two_gpus, tmp_path)):
        names = ['output', 'input grad', 'weight grad', 'running mean', 'running var']
        # rank 0's empty batch: its running statistics still compared (its output is empty, its gradients None)
        required = [f'batches (2, 3): {n}' for n in names] + [f'batches (0, 3): {n}' for n in
                                                               (names if rank else names[3:])]
        assert all(key in report['excess'] for key in required), (rank, report)
        for key, excess in report['excess'].items():
            assert excess == 'both None' or excess <= 1e-5, (rank, key, excess)
        # The point: PyTorch's forward reads data back to the host, ours does not.
        assert report['reference_waits'] is True and report['ours_waits'] is False, (rank, report)
