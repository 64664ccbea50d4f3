"""FastUPerHead / FastFCNHead against mmseg's UPerHead / FCNHead with the same weights and inputs, and the
matrix-product bilinear resize against F.interpolate."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmseg.models.decode_heads import FCNHead, UPerHead
from mmseg.models.losses import accuracy
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch.utils._python_dispatch import TorchDispatchMode

from replk_mm.models.heads.decode_heads import FastFCNHead, FastUPerHead, top1_accuracy
from replk_mm.models.heads.resize import _cached_interpolation_matrix, bilinear_resize, interpolation_matrix
from replk_mm.numerics import relative_error

NUM_CLASSES = 7
IGNORE_INDEX = 255
SIZES = [((7, 9), (29, 33)), ((16, 16), (64, 64)), ((8, 12), (8, 30)), ((1, 1), (5, 6)),
         ((32, 30), (9, 7)), ((64, 64), (16, 16)), ((5, 6), (1, 1))]


# float64: both exact. float32: F.interpolate computes source positions in float32 (lambda off by up to
# ~1e-7 * position), the matrices in float64 then rounded.
@pytest.mark.parametrize('dtype,tolerance', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('in_size,out_size', SIZES)
def test_bilinear_resize_matches_interpolate(in_size, out_size, align_corners, dtype, tolerance):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *in_size, generator=generator, dtype=dtype, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out = bilinear_resize(x, out_size, align_corners)
    ref = F.interpolate(x_ref, out_size, mode='bilinear', align_corners=align_corners)
    assert out.shape == ref.shape and out.dtype == dtype
    assert relative_error(out, ref) < tolerance
    grad = torch.randn(ref.shape, generator=generator, dtype=dtype)
    out.backward(grad)
    ref.backward(grad)
    assert relative_error(x.grad, x_ref.grad) < tolerance


def test_interpolation_matrix_rows_are_convex_weights():
    for align_corners in (False, True):
        for in_size, out_size in ((5, 17), (17, 5), (1, 4), (4, 1)):
            matrix = interpolation_matrix(in_size, out_size, align_corners, torch.float64, torch.device('cpu'))
            assert matrix.shape == (out_size, in_size)
            assert torch.allclose(matrix.sum(dim=1), torch.ones(out_size, dtype=torch.float64))
            assert (matrix >= 0).all() and ((matrix > 0).sum(dim=1) <= 2).all()


def test_matrix_first_built_under_inference_mode_serves_training():
    _cached_interpolation_matrix.cache_clear()
    with torch.inference_mode():
        bilinear_resize(torch.randn(1, 2, 3, 5), (7, 11), False)
    x = torch.randn(1, 2, 3, 5, requires_grad=True)
    bilinear_resize(x, (7, 11), False).sum().backward()  # raises if the cached matrices were inference tensors
    assert x.grad.shape == x.shape


def test_bilinear_resize_traces_into_one_graph():
    """torch.compile sees no graph break (the matrices are built in the graph, not taken from the cache)."""
    x = torch.randn(2, 3, 8, 10)
    compiled = torch.compile(lambda t: bilinear_resize(t, (32, 40), False), backend='eager', fullgraph=True)
    assert relative_error(compiled(x), F.interpolate(x, (32, 40), mode='bilinear', align_corners=False)) < 1e-6


def test_bilinear_resize_rejects_non_4d_input():
    with pytest.raises(ValueError, match=r'\(N, C, H, W\).*\(3, 4, 5\)'):
        bilinear_resize(torch.randn(3, 4, 5), (8, 8), False)


def test_top1_accuracy_matches_mmseg_accuracy():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, NUM_CLASSES, 13, 11, generator=generator)
    target = torch.randint(0, NUM_CLASSES, (2, 13, 11), generator=generator)
    target[:, :4] = IGNORE_INDEX
    for ignore_index in (IGNORE_INDEX, None):
        ours = top1_accuracy(logits, target, ignore_index=ignore_index)
        ref = accuracy(logits, target, ignore_index=ignore_index)
        assert ours.shape == ref.shape == (1, )
        assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    # Half the valid pixels right by construction: exactly 50%.
    target = logits.argmax(dim=1)
    target[:, :, ::2] = (target[:, :, ::2] + 1) % NUM_CLASSES
    target[:, :, 1::4] = IGNORE_INDEX
    valid = (target != IGNORE_INDEX).sum().item()
    right = ((logits.argmax(dim=1) == target) & (target != IGNORE_INDEX)).sum().item()
    assert top1_accuracy(logits, target, ignore_index=IGNORE_INDEX).item() == pytest.approx(100 * right / valid)


def _head_loss_cfg(class_weight, avg_non_ignore, sampler, ignore_index):
    """Two CE losses of one name (summed into one entry) and, without a sampler, a Dice loss of another name."""
    losses = [dict(type='CrossEntropyLoss', loss_weight=weight, class_weight=class_weight,
                   avg_non_ignore=avg_non_ignore) for weight in (1.0, 0.5)]
    if sampler is None:  # mmseg's DiceLoss takes no per-pixel weights
        losses.append(dict(type='DiceLoss', loss_weight=0.3, ignore_index=ignore_index))
    return dict(loss_decode=losses, sampler=sampler, ignore_index=ignore_index)


def _head_pair(stock_cls, fast_cls, head_cfg):
    torch.manual_seed(0)
    stock = stock_cls(**head_cfg)
    for module in stock.modules():  # non-trivial BN affine parameters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    fast = fast_cls(**head_cfg)
    fast.load_state_dict(stock.state_dict())  # same parameters and buffers
    return stock.train(), fast.train()


def _batch(feature_sizes, channels, label_size, seed, ignore_index=IGNORE_INDEX):
    generator = torch.Generator().manual_seed(seed)
    features = [torch.randn(2, c, *size, generator=generator) for c, size in zip(channels, feature_sizes)]
    samples = []
    for _ in range(2):
        label = torch.randint(0, NUM_CLASSES, (1, *label_size), generator=generator)
        label[:, :label_size[0] // 5] = ignore_index  # a band of ignored pixels
        label[torch.rand(label.shape, generator=generator) < 0.1] = ignore_index
        samples.append(SegDataSample(gt_sem_seg=PixelData(data=label)))
    return features, samples


def _loss_and_grads(head, features, samples):
    features = [feature.clone().requires_grad_() for feature in features]
    torch.manual_seed(1)  # same dropout mask in both heads
    losses = head.loss(features, samples, train_cfg=None)
    total = sum(value for name, value in losses.items() if 'loss' in name)
    total.backward()
    grads = {name: param.grad for name, param in head.named_parameters() if param.grad is not None}
    return losses, grads, [feature.grad for feature in features]


def assert_same_training_step(stock, fast, features, samples):
    stock_losses, stock_grads, stock_input_grads = _loss_and_grads(stock, features, samples)
    fast_losses, fast_grads, fast_input_grads = _loss_and_grads(fast, features, samples)
    assert fast_losses.keys() == stock_losses.keys()
    for name, value in stock_losses.items():
        if name == 'acc_seg':
            assert fast_losses[name].item() == pytest.approx(value.item(), rel=1e-6)
        else:
            assert relative_error(fast_losses[name], value) < 1e-5, name
    assert fast_grads.keys() == stock_grads.keys() == {name for name, _ in stock.named_parameters()}
    for name, grad in stock_grads.items():
        assert relative_error(fast_grads[name], grad) < 1e-4, name
    for fast_grad, stock_grad in zip(fast_input_grads, stock_input_grads):
        assert (fast_grad is None) == (stock_grad is None)
        if stock_grad is not None:
            assert relative_error(fast_grad, stock_grad) < 1e-4


# mmseg 1.2.2's CrossEntropyLoss indexes class_weight with every label, ignored ones included, so with class
# weights its ignore index must be a class index (255 raises IndexError in mmseg's own heads).
LOSS_SETTINGS = [
    pytest.param(None, False, None, IGNORE_INDEX, id='plain'),
    pytest.param([0.5, 1.0, 2.0, 1.0, 0.7, 1.3, 1.0], True, None, NUM_CLASSES - 1, id='class_weight-avg_non_ignore'),
    pytest.param([0.5, 1.0, 2.0, 1.0, 0.7, 1.3, 1.0], False, None, NUM_CLASSES - 1, id='class_weight'),
    pytest.param(None, True, dict(type='OHEMPixelSampler', thresh=0.15, min_kept=200), IGNORE_INDEX,
                 id='ohem_sampler'),
]


@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('class_weight,avg_non_ignore,sampler,ignore_index', LOSS_SETTINGS)
def test_fast_uper_head_matches_uper_head(align_corners, class_weight, avg_non_ignore, sampler, ignore_index):
    channels = [8, 16, 24, 32]
    head_cfg = dict(in_channels=channels, in_index=[0, 1, 2, 3], channels=16, pool_scales=(1, 2, 3, 6),
                    dropout_ratio=0.1, num_classes=NUM_CLASSES, norm_cfg=dict(type='BN', requires_grad=True),
                    align_corners=align_corners,
                    **_head_loss_cfg(class_weight, avg_non_ignore, sampler, ignore_index))
    stock, fast = _head_pair(UPerHead, FastUPerHead, head_cfg)
    # Strides 4..32 of a 128x128 crop, and an odd crop whose pyramid does not divide evenly.
    for feature_sizes, label_size in [([(32, 32), (16, 16), (8, 8), (4, 4)], (128, 128)),
                                      ([(17, 15), (9, 8), (5, 4), (3, 2)], (67, 61))]:
        features, samples = _batch(feature_sizes, channels, label_size, seed=2, ignore_index=ignore_index)
        assert_same_training_step(stock, fast, features, samples)
        stock.zero_grad()
        fast.zero_grad()


@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('class_weight,avg_non_ignore,sampler,ignore_index', LOSS_SETTINGS)
def test_fast_fcn_head_matches_fcn_head(align_corners, class_weight, avg_non_ignore, sampler, ignore_index):
    channels = [8, 16, 24, 32]
    head_cfg = dict(in_channels=24, in_index=2, channels=12, num_convs=1, concat_input=False, dropout_ratio=0.1,
                    num_classes=NUM_CLASSES, norm_cfg=dict(type='BN', requires_grad=True),
                    align_corners=align_corners,
                    **_head_loss_cfg(class_weight, avg_non_ignore, sampler, ignore_index))
    stock, fast = _head_pair(FCNHead, FastFCNHead, head_cfg)
    features, samples = _batch([(32, 32), (16, 16), (8, 8), (4, 4)], channels, (128, 128), seed=3,
                               ignore_index=ignore_index)
    assert_same_training_step(stock, fast, features, samples)


class HostSyncCounter(TorchDispatchMode):
    """Counts the ops that make a CUDA host wait for the device: scalar reads and boolean-mask indexing."""

    def __init__(self):
        super().__init__()
        self.syncs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        masks = args[1] if name == 'aten.index' else ()
        if name in ('aten.nonzero', 'aten._local_scalar_dense', 'aten.masked_select') or any(
                isinstance(index, torch.Tensor) and index.dtype == torch.bool for index in masks):
            self.syncs.append(name)
        return func(*args, **(kwargs or {}))


def test_fast_uper_head_training_step_never_waits_for_the_device():
    """mmseg's accuracy indexes with boolean masks twice per head (a host-device sync each); ours does not."""
    channels = [8, 16, 24, 32]
    head_cfg = dict(in_channels=channels, in_index=[0, 1, 2, 3], channels=16, num_classes=NUM_CLASSES,
                    norm_cfg=dict(type='BN', requires_grad=True))
    syncs = {}
    for head in _head_pair(UPerHead, FastUPerHead, head_cfg):
        features, samples = _batch([(32, 32), (16, 16), (8, 8), (4, 4)], channels, (128, 128), seed=5)
        with HostSyncCounter() as counter:
            losses = head.loss(features, samples, train_cfg=None)
            losses['loss_ce'].backward()
        syncs[type(head).__name__] = counter.syncs
    assert syncs == {'UPerHead': ['aten.index', 'aten.index'], 'FastUPerHead': []}


def test_fast_uper_head_compiles_without_graph_breaks():
    """Forward and loss each trace into one graph, so torch.compile / CUDA graphs can take the whole head."""
    channels = [8, 16, 24, 32]
    head_cfg = dict(in_channels=channels, in_index=[0, 1, 2, 3], channels=16, num_classes=NUM_CLASSES,
                    norm_cfg=dict(type='BN', requires_grad=True), dropout_ratio=0.0)
    stock, fast = _head_pair(UPerHead, FastUPerHead, head_cfg)
    features, samples = _batch([(32, 32), (16, 16), (8, 8), (4, 4)], channels, (128, 128), seed=6)
    torch._dynamo.reset()
    logits = torch.compile(fast.forward, backend='eager', fullgraph=True)(features)
    losses = torch.compile(fast.loss_by_feat, backend='eager', fullgraph=True)(logits, samples)
    stock_losses = stock.loss_by_feat(stock.forward(features), samples)
    assert relative_error(losses['loss_ce'], stock_losses['loss_ce']) < 1e-5


def test_fast_heads_predict_like_stock_heads():
    channels = [8, 16, 24, 32]
    head_cfg = dict(in_channels=channels, in_index=[0, 1, 2, 3], channels=16, num_classes=NUM_CLASSES,
                    norm_cfg=dict(type='BN', requires_grad=True), align_corners=False)
    stock, fast = _head_pair(UPerHead, FastUPerHead, head_cfg)
    features, _ = _batch([(32, 32), (16, 16), (8, 8), (4, 4)], channels, (128, 128), seed=4)
    meta = [dict(img_shape=(128, 128))] * 2
    with torch.no_grad():
        stock_out = stock.eval().predict(features, meta, test_cfg=None)
        fast_out = fast.eval().predict(features, meta, test_cfg=None)
    assert fast_out.shape == (2, NUM_CLASSES, 128, 128)
    assert relative_error(fast_out, stock_out) < 1e-5


def test_fast_heads_build_from_mmseg_scope():
    with DefaultScope.overwrite_default_scope('mmseg'):
        head = MODELS.build(dict(type='FastFCNHead', in_channels=8, channels=4, num_classes=3))
        scoped = MODELS.build(dict(type='replk_mm.FastUPerHead', in_channels=[4, 8], in_index=[0, 1], channels=4,
                                   num_classes=3))
    assert type(head) is FastFCNHead and type(scoped) is FastUPerHead
