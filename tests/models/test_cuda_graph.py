"""RepLKNet(cuda_graph=True): eager where graphs cannot serve, and on a GPU the same training steps as eager."""
import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from replk_mm import RepLKNet
from replk_mm.models.cuda_graph import _trainable_parameters_as_new_leaves

from conftest import TINY_ARCH, run_on_two_gpus

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA graphs need a GPU')


def twins(**kwargs):
    """A graphed model and an eager one with the same weights (no drop path: its random draws differ)."""
    torch.manual_seed(0)
    eager = RepLKNet(arch=TINY_ARCH, drop_path_rate=0.0, **kwargs)
    graphed = RepLKNet(arch=TINY_ARCH, drop_path_rate=0.0, cuda_graph=True, **kwargs)
    graphed.load_state_dict(eager.state_dict())
    return graphed, eager


def loss_of(outputs):
    return sum(out.float().square().mean() * (i + 1) for i, out in enumerate(outputs))


def test_cuda_graph_and_with_cp_exclude_each_other():
    with pytest.raises(ValueError, match='with_cp=True and cuda_graph=True'):
        RepLKNet(arch=TINY_ARCH, with_cp=True, cuda_graph=True)


def test_cpu_calls_run_eagerly():
    graphed, eager = twins()
    x = torch.randn(2, 3, 64, 64)
    for model in (graphed, eager):
        loss_of(model(x)).backward()
    assert graphed.cuda_graphs.captured == {}
    for (name, param), other in zip(graphed.named_parameters(), eager.parameters()):
        torch.testing.assert_close(param.grad, other.grad, rtol=0, atol=0, msg=name)


def test_shapes_beyond_the_limit_run_eagerly_with_one_warning(monkeypatch):
    """Past ``max_shapes`` captured shapes a new shape runs eagerly: one warning, then silently."""
    graphed, eager = twins()
    graphs = graphed.cuda_graphs
    monkeypatch.setattr(graphs, 'eligible', lambda module, x: True)  # as if on a GPU
    graphs.captured[((1, 3, 32, 32), torch.float32, torch.device('cuda', 0), False, None)] = object()
    x = torch.randn(2, 3, 64, 64)
    with pytest.warns(UserWarning, match=r'input shape \(2, 3, 64, 64\) is not one of the 1 captured'):
        first = graphed(x)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        again = graphed(x)
    for ours_first, ours_again, theirs in zip(first, again, eager(x)):
        torch.testing.assert_close(ours_first, theirs, rtol=0, atol=0)
        torch.testing.assert_close(ours_again, theirs, rtol=0, atol=0)
    assert len(graphs.captured) == 1


def test_across_processes_only_syncbn_without_host_waits_is_captured(monkeypatch):
    """PyTorch's SyncBN reads back to the host in its forward (not capturable); SyncBatchNormWithoutHostSync
    does not, and is captured with its collectives."""
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: True)
    monkeypatch.setattr(torch.distributed, 'get_world_size', lambda group=None: 2)
    key = ((2, 3, 64, 64), torch.float32, torch.device('cuda', 0), False, None)
    reasons = {}
    for norm in ('SyncBN', 'SyncBatchNormWithoutHostSync'):
        model = RepLKNet(arch=TINY_ARCH, cuda_graph=True, norm_cfg=dict(type=norm, requires_grad=True))
        reasons[norm] = model.cuda_graphs._eager_reason(model, key)
    assert "PyTorch's SyncBN across processes" in reasons['SyncBN']
    assert reasons['SyncBatchNormWithoutHostSync'] is None
    # Once a shape is captured, another (even with room under max_shapes) is not: its warm-up's collectives
    # would have no partner on the other processes.
    model.cuda_graphs.max_shapes = 2
    model.cuda_graphs.captured[key] = object()
    other = ((2, 3, 64, 96),) + key[1:]
    assert 'only the first training shape is captured' in model.cuda_graphs._eager_reason(model, other)


def test_deep_copy_starts_without_graphs():
    """An EMA or deploy copy must not share (or try to copy) the original's captured graphs."""
    model = RepLKNet(arch=TINY_ARCH, cuda_graph=True)
    model.cuda_graphs.captured['key'] = object()
    copied = copy.deepcopy(model)
    assert copied.cuda_graphs is not model.cuda_graphs and copied.cuda_graphs.captured == {}
    assert list(model.cuda_graphs.captured) == ['key']
    model.switch_to_deploy()
    assert model.cuda_graphs.captured == {}


def test_captured_passes_differentiate_stand_ins_on_the_parameters_storage():
    """DDP keeps each parameter's gradient accumulator, made on the stream current when it wrapped the model; a
    captured backward must not reach it. Inside the block the trainable parameters are new leaves on the same
    storage (tied ones still tied, frozen ones left), with the parameters' gradients; after it, the module's own."""
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    model[1].weight = model[0].weight
    model[1].bias.requires_grad_(False)
    x = torch.randn(4, 3)
    expected = torch.autograd.grad(model(x).square().sum(), [model[0].weight, model[0].bias])
    originals = list(model.parameters())
    with _trainable_parameters_as_new_leaves(model, [model[0].weight, model[0].bias]) as stand_ins:
        weight, bias = stand_ins
        assert weight is not originals[0] and weight.data_ptr() == originals[0].data_ptr()
        assert model[0].weight is weight and model[1].weight is weight and model[0].bias is bias
        assert model[1].bias is originals[2]
        grads = torch.autograd.grad(model(x).square().sum(), stand_ins)
        with torch.no_grad():
            originals[0].add_(1.0)  # an optimizer's in-place step is seen through the stand-in
        assert torch.equal(weight, originals[0])
    for actual, wanted in zip(grads, expected):
        torch.testing.assert_close(actual, wanted, rtol=1e-6, atol=0)
    assert all(param.grad is None for param in originals)
    assert [id(param) for param in model.parameters()] == [id(param) for param in originals]
    with pytest.raises(ZeroDivisionError), _trainable_parameters_as_new_leaves(model, []):
        1 / 0
    assert model[0].weight is originals[0]


def train_steps(model, inputs, autocast_dtype, accumulate=1):
    """Plain SGD steps (a small lr: the two models' float differences must not grow step by step) on ``inputs``,
    each summing the gradients of ``accumulate`` backward passes; the losses and each step's gradients."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    losses, grads = [], []
    for x in inputs:
        optimizer.zero_grad()
        for _ in range(accumulate):
            with torch.autocast('cuda', dtype=autocast_dtype or torch.float16, enabled=autocast_dtype is not None):
                loss = loss_of(model(x))
            loss.backward()
            losses.append(loss.item())
        grads.append([param.grad.clone() for param in model.parameters()])
        optimizer.step()
    return losses, grads


def assert_close_to_scale(actual, expected, rtol, name):
    """Equal up to ``rtol`` of the expected tensor's largest magnitude (gradients of BN weights in early layers
    mix many terms, so elementwise relative tolerances are the wrong measure)."""
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().item() + 1e-12
    assert (actual - expected).abs().max().item() <= rtol * scale, name


def assert_same_training(graphed_run, eager_run, graphed, eager, rtol):
    (graphed_losses, graphed_grads), (eager_losses, eager_grads) = graphed_run, eager_run
    torch.testing.assert_close(graphed_losses, eager_losses, rtol=rtol, atol=0)
    names = [name for name, _ in eager.named_parameters()]
    for step, (ours, theirs) in enumerate(zip(graphed_grads, eager_grads)):
        for name, actual, expected in zip(names, ours, theirs):
            assert_close_to_scale(actual, expected, rtol, f'step {step} grad {name}')
    for (name, tensor), other in zip(graphed.state_dict().items(), eager.state_dict().values()):
        assert_close_to_scale(tensor, other, rtol, name)


@cuda
@pytest.mark.parametrize('autocast_dtype', [None, torch.bfloat16])
def test_graphed_training_steps_match_eager(autocast_dtype):
    """Three steps (the first captures) and then a step at a new shape, which runs eagerly with a warning:
    the same losses, gradients, weights and BN statistics as eager steps, and one capture."""
    torch.backends.cudnn.allow_tf32 = False  # both models' convs in full float32
    graphed, eager = (model.cuda().train() for model in twins())
    inputs = [torch.randn(2, 3, 64, 96, device='cuda') for _ in range(3)]
    rtol = 1e-4 if autocast_dtype is None else 2e-2
    assert_same_training(train_steps(graphed, inputs, autocast_dtype), train_steps(eager, inputs, autocast_dtype),
                         graphed, eager, rtol)
    assert len(graphed.cuda_graphs.captured) == 1
    assert graphed.stem[0].bn.num_batches_tracked.item() == 3  # warm-up passes left no trace

    other_shape = [torch.randn(2, 3, 64, 64, device='cuda')]
    with pytest.warns(UserWarning, match=r'input shape \(2, 3, 64, 64\) is not one of the 1 captured'):
        graphed_run = train_steps(graphed, other_shape, autocast_dtype)
    assert_same_training(graphed_run, train_steps(eager, other_shape, autocast_dtype), graphed, eager, rtol)
    graphed.eval(), eager.eval()
    with torch.no_grad():
        for ours, theirs in zip(graphed(inputs[0]), eager(inputs[0])):
            assert_close_to_scale(ours, theirs, rtol, 'eval output')


@cuda
def test_graphed_gradients_accumulate():
    """Two backward passes per step add up, as in eager mode (the graph's gradient buffers are not kept as .grad)."""
    torch.backends.cudnn.allow_tf32 = False
    graphed, eager = (model.cuda().train() for model in twins())
    inputs = [torch.randn(2, 3, 64, 64, device='cuda') for _ in range(2)]
    graphed_run = train_steps(graphed, inputs, None, accumulate=2)
    assert_same_training(graphed_run, train_steps(eager, inputs, None, accumulate=2), graphed, eager, 1e-4)


@cuda
@pytest.mark.parametrize('rate', [0.0, 0.5])
def test_drop_path_draws_anew_in_every_replay(rate):
    """The configs train with drop path 0.5: each replay must draw new masks (torch's CUDA generator advances
    its offset per replay), not repeat the captured ones. Without drop path the same input gives the same output."""
    torch.manual_seed(0)
    model = RepLKNet(arch=TINY_ARCH, drop_path_rate=rate, cuda_graph=True).cuda().train()
    x = torch.randn(2, 3, 64, 64, device='cuda')
    outputs = []
    for _ in range(4):  # the first call captures; three replays, no weight update in between
        out = model(x)
        outputs.append(out[-1].detach().clone())
        loss_of(out).backward()
    assert len(model.cuda_graphs.captured) == 1
    repeats = [torch.equal(outputs[i], outputs[j]) for i in range(1, 4) for j in range(i + 1, 4)]
    assert all(repeats) if rate == 0.0 else not any(repeats)


@cuda
def test_frozen_after_capture_is_refused():
    graphed, _ = twins()
    graphed.cuda().train()
    train_steps(graphed, [torch.randn(1, 3, 64, 64, device='cuda')], None)
    graphed.stem[0].conv.weight.requires_grad_(False)
    with pytest.raises(RuntimeError, match='frozen or unfrozen after the CUDA graphs were captured'):
        graphed(torch.randn(1, 3, 64, 64, device='cuda'))


def _graphed_syncbn_steps(rank):
    """Graphed and eager twins with SyncBatchNormWithoutHostSync, each wrapped in DDP as mmengine wraps a model
    (on the default stream), three steps each on this rank's own batches: whether the graphs were captured and
    the first mismatch (None: the same training)."""
    torch.backends.cudnn.allow_tf32 = False
    norm_cfg = dict(type='SyncBatchNormWithoutHostSync', requires_grad=True)
    graphed, eager = (model.cuda().train() for model in twins(norm_cfg=norm_cfg))
    torch.manual_seed(1 + rank)
    inputs = [torch.randn(2, 3, 64, 96, device='cuda') + rank for _ in range(3)]
    graphed_run = train_steps(DistributedDataParallel(graphed, device_ids=[rank]), inputs, None)
    report = dict(captured=len(graphed.cuda_graphs.captured), mismatch=None)
    try:
        eager_run = train_steps(DistributedDataParallel(eager, device_ids=[rank]), inputs, None)
        assert_same_training(graphed_run, eager_run, graphed, eager, 1e-4)
    except AssertionError as exc:
        report['mismatch'] = str(exc)[:500]
    return report


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs two CUDA devices (NCCL)')
def test_syncbn_across_two_gpus_is_captured_with_its_collectives_under_ddp(tmp_path):
    """Across processes the SyncBN layers' all-gathers and all-reduces are replayed in the graphs, inside DDP's
    forward: the same training as eager steps, on every rank, with each rank's statistics merged with the other's
    and DDP's averaged gradients."""
    for rank, report in enumerate(run_on_two_gpus(_graphed_syncbn_steps, tmp_path)):
        assert report == dict(captured=1, mismatch=None), (rank, report)
