import copy

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from replk_mm import RepLKNet
from replk_mm.models.backbones.replknet import PointwiseConv2d, ReparamLargeKernelConv

from conftest import TINY_ARCH, randomize_bn_stats, read_key_list, relative_error

CLASSIFIER_PREFIXES = ('norm.', 'head.')




@pytest.mark.parametrize('arch, expected', [('31B', 78_837_120), ('31L', 171_130_944), ('XL', 333_382_656)])
def test_parameter_count_matches_reference(arch, expected):
    model = RepLKNet(arch=arch, dwconv_impl='torch')
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize('arch, expected', [('31B', 78_840_960), ('XL', 333_390_336)])
def test_parameter_count_with_stage_norms(arch, expected):
    model = RepLKNet(arch=arch, norm_intermediate_features=True)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize('arch, tsv, deploy', [
    ('31B', 'official_keys_31B_train.tsv', False),
    ('31B', 'official_keys_31B_deploy.tsv', True),
    ('XL', 'official_keys_XL_train.tsv', False),
])
def test_state_dict_matches_official_keys(reference_dir, arch, tsv, deploy):
    official = {k: v for k, v in read_key_list(reference_dir / tsv).items()
                if not k.startswith(CLASSIFIER_PREFIXES)}
    model = RepLKNet(arch=arch, small_kernel_merged=deploy)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(official)
    assert ours == official


def test_official_state_dict_loads_strictly(reference_dir):
    """A state dict in the official layout (classifier keys dropped) loads with strict=True."""
    official = read_key_list(reference_dir / 'official_keys_31B_train.tsv')
    state = {k: torch.randn(shape) if shape else torch.tensor(3) for k, shape in official.items()
             if not k.startswith(CLASSIFIER_PREFIXES)}
    model = RepLKNet(arch='31B')
    model.load_state_dict(state, strict=True)
    torch.testing.assert_close(model.stem[0].conv.weight, state['stem.0.conv.weight'])


@pytest.mark.parametrize('size', [(225, 300), (64, 64), (33, 97)])
def test_output_strides_use_ceil_rounding(size):
    model = RepLKNet(arch=TINY_ARCH).eval()
    outs = model(torch.randn(1, 3, *size))
    assert len(outs) == 4
    h, w = size
    for stride, channels, out in zip((4, 8, 16, 32), TINY_ARCH['channels'], outs):
        assert out.shape == (1, channels, -(-h // stride), -(-w // stride))


def test_out_indices_selects_stages():
    model = RepLKNet(arch=TINY_ARCH, out_indices=(1, 3)).eval()
    outs = model(torch.randn(2, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16, 32]
    assert [o.shape[-1] for o in outs] == [8, 2]


def test_31b_shapes():
    model = RepLKNet(arch='31B', dwconv_impl='torch').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 128, 16, 24), (1, 256, 8, 12), (1, 512, 4, 6), (1, 1024, 2, 3)]


@pytest.mark.parametrize('arch', ['31B', dict(TINY_ARCH, small_kernel=None, dw_ratio=1.5)])
def test_switch_to_deploy_preserves_outputs(arch):
    torch.manual_seed(0)
    model = RepLKNet(arch=arch, norm_intermediate_features=True).eval()
    randomize_bn_stats(model)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        before = model(x)
        model.switch_to_deploy()
        after = model(x)
    for b, a in zip(before, after):
        assert relative_error(a, b) < 1e-5
    assert not any(isinstance(m, ReparamLargeKernelConv) and hasattr(m, 'lkb_origin') for m in model.modules())
    merged = copy.deepcopy(model.state_dict())
    model.switch_to_deploy()  # second call: no-op
    assert all(torch.equal(merged[k], v) for k, v in model.state_dict().items())
    assert list(merged) == list(model.state_dict())


def test_deploy_form_built_directly_matches_switched_keys():
    switched = RepLKNet(arch=TINY_ARCH)
    switched.switch_to_deploy()
    direct = RepLKNet(arch=TINY_ARCH, small_kernel_merged=True)
    assert {k: v.shape for k, v in switched.state_dict().items()} == \
        {k: v.shape for k, v in direct.state_dict().items()}


def test_with_cp_gives_same_gradients():
    torch.manual_seed(0)
    plain = RepLKNet(arch=TINY_ARCH, drop_path_rate=0.0)
    checkpointed = RepLKNet(arch=TINY_ARCH, drop_path_rate=0.0, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for model in (plain, checkpointed):
        model.zero_grad()
        sum(o.square().mean() for o in model(x)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize('frozen_stages', [0, 2])
def test_frozen_stages_freeze_params_and_keep_bn_in_eval(frozen_stages):
    model = RepLKNet(arch=TINY_ARCH, frozen_stages=frozen_stages)
    model.train()
    frozen_prefixes = ['stem.'] + [f'stages.{i}.' for i in range(frozen_stages)] + \
        [f'transitions.{i}.' for i in range(frozen_stages - 1)]
    for name, param in model.named_parameters():
        assert param.requires_grad == (not name.startswith(tuple(frozen_prefixes))), name
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm):
            assert module.training == (not name.startswith(tuple(frozen_prefixes))), name
    # A frozen BN's running statistics do not move in a training step.
    stem_mean = model.stem[0].bn.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(model.stem[0].bn.running_mean, stem_mean)


def test_norm_eval_keeps_all_bn_in_eval_but_trainable():
    model = RepLKNet(arch=TINY_ARCH, norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(not m.training for m in bns)
    assert all(p.requires_grad for p in model.parameters())
    mean = bns[5].running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(bns[5].running_mean, mean)


def test_drop_path_rates_grow_linearly():
    model = RepLKNet(arch='31B', drop_path_rate=0.5)
    rates = [model.stages[s].blocks[b].drop_path.drop_prob for s in range(4)
             for b in range(len(model.stages[s].blocks))]
    assert len(rates) == 48
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5)
    assert rates[0::2] == rates[1::2]  # both modules of a pair share one rate
    pair_rates = rates[0::2]
    assert all(b > a for a, b in zip(pair_rates, pair_rates[1:]))


def test_syncbn_only_when_asked():
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in RepLKNet(arch=TINY_ARCH).modules())
    synced = RepLKNet(arch=TINY_ARCH, norm_cfg=dict(type='SyncBN'))
    assert isinstance(synced.stem[0].bn, torch.nn.SyncBatchNorm)


@pytest.mark.parametrize('kwargs, argument', [
    (dict(arch='31X'), 'arch'),
    (dict(arch=dict(layers=[1, 1, 1, 1])), 'missing keys'),
    (dict(arch=TINY_ARCH, out_indices=(0, 4)), 'out_indices'),
    (dict(arch=TINY_ARCH, out_indices=(-1, )), 'out_indices'),
    (dict(arch=TINY_ARCH, frozen_stages=4), 'frozen_stages'),
    (dict(arch=TINY_ARCH, norm_cfg=dict(type='GN')), 'norm_cfg'),
    (dict(arch=TINY_ARCH, dwconv_impl='cuda'), 'impl'),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        RepLKNet(**kwargs)


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ValueError, match=r"\['31B', '31L', 'XL'\]"):
        RepLKNet(arch='31X')


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_pointwise_conv_equals_the_1x1_conv_forward_and_backward(memory_format):
    torch.manual_seed(0)
    layer = PointwiseConv2d(6, 10).double()
    x = torch.randn(3, 6, 5, 7, dtype=torch.float64).to(memory_format=memory_format).requires_grad_()
    grad_y = torch.randn(3, 10, 5, 7, dtype=torch.float64)
    y = layer(x)
    y.backward(grad_y)
    x_ref = x.detach().clone().requires_grad_()
    weight_ref = layer.weight.detach().clone().requires_grad_()
    y_ref = torch.nn.functional.conv2d(x_ref, weight_ref)
    y_ref.backward(grad_y)
    assert y.shape == (3, 10, 5, 7)
    for ours, ref in ((y, y_ref), (x.grad, x_ref.grad), (layer.weight.grad, weight_ref.grad)):
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_every_unstrided_1x1_conv_of_the_backbone_is_a_pointwise_conv():
    model = RepLKNet('31B')
    pointwise = [name for name, m in model.named_modules() if isinstance(m, PointwiseConv2d)]
    # four per layer (RepLKBlock and ConvFFN: pw1, pw2 each), the stem's 1x1 and one per transition
    assert len(pointwise) == 4 * (2 + 2 + 18 + 2) + 1 + 3
    assert all(isinstance(m, PointwiseConv2d) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1))


def test_backbone_compiles_as_one_graph_forward_and_backward():
    """torch.compile(fullgraph=True) takes the whole backbone (1x1 convs as matrix products, the op) without a
    graph break; the compiled forward gives the eager outputs and the backward reaches the input."""
    torch.manual_seed(0)
    model = RepLKNet(TINY_ARCH, drop_path_rate=0.0).eval()
    x = torch.randn(2, 3, 64, 96, requires_grad=True)
    outs = torch.compile(model, fullgraph=True, backend='eager')(x)
    sum(o.sum() for o in outs).backward()
    with torch.no_grad():
        want = model(x)
    for got, ref in zip(outs, want):
        torch.testing.assert_close(got, ref)
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_kernels_are_compiled_once_per_input_dtype_and_mode(monkeypatch):
    """The backbone asks the ops to compile its convs' kernels at the first call per dtype and train/eval mode."""
    from replk_mm.models.backbones import replknet
    calls = []
    monkeypatch.setattr(replknet, 'precompile_kernels', lambda module, input, dtype, backward: calls.append(
        (module, dtype, backward)))
    model = RepLKNet(arch=TINY_ARCH)
    x = torch.zeros(1, 3, 32, 32)
    model._compile_kernels(x)
    model._compile_kernels(x)
    model._compile_kernels(x.double())
    with torch.no_grad():
        model._compile_kernels(x)
    model.eval()
    model._compile_kernels(x)
    assert calls == [(model, torch.float32, True), (model, torch.float64, True), (model, torch.float32, False)]
