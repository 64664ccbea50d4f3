"""tools/get_flops.py (replk_mm.analysis.flops) and tools/benchmark.py on the tiny configs at tiny shapes."""
import argparse
import contextlib
import json
import random
import statistics
import time

import pytest
import torch
import torch.nn as nn
from mmdet.structures.bbox import bbox_overlaps
from mmengine.analysis import FlopAnalyzer
from mmengine.config import Config

from replk_mm import RepLKNet
from replk_mm.analysis import config_complexity
from replk_mm.apis import OwnMemory, allocator_counts, build_model, time_call
from replk_mm.ops import DepthwiseConv2d

from conftest import PROJECT_ROOT, TINY_ARCH, load_tool, run_main

SEG_CONFIG = PROJECT_ROOT / 'configs' / 'upernet_replknet_tiny_synthetic_ade20k.py'
DET_CONFIG = PROJECT_ROOT / 'configs' / 'cascade_mask_rcnn_replknet_tiny_synthetic_coco.py'


def flops(module, *inputs):
    analyzer = FlopAnalyzer(module, inputs)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


def test_depthwise_conv_counts_one_mac_per_tap():
    conv = DepthwiseConv2d(8, 13, impl='torch')
    assert flops(conv, torch.randn(2, 8, 20, 24)).total() == 2 * 8 * 13 * 13 * 20 * 24


def conv_macs(model, forward):
    """Per conv call, N * C_out * H_out * W_out * C_in/groups * kh * kw, recorded by hooks while ``forward()`` runs."""
    macs = []

    def count(conv, _, out):
        macs.append(out.numel() * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1])

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        forward()
    for hook in hooks:
        hook.remove()
    return macs


def test_backbone_conv_flops_equal_an_independent_count():
    """Every conv (dense, depthwise 3x3, 1x1, large KxK) costs N * C_out * H_out * W_out * C_in/groups * kh * kw."""
    model = RepLKNet(arch=TINY_ARCH, dwconv_impl='torch').eval()
    inputs = torch.randn(1, 3, 64, 96)
    expected = conv_macs(model, lambda: model(inputs))
    assert len(expected) == 4 + 6 + 5 * 4 + 5 * 2  # stem, transitions, 5x (pw1, KxK, 5x5, pw2), 5 FFNs x 2
    assert flops(model, inputs).by_operator()['conv'] == sum(expected)


def test_tiny_segmentor_params_and_flops_in_both_forms():
    cfg = Config.fromfile(SEG_CONFIG)
    results = config_complexity(cfg, (64, 96))
    model = build_model(cfg)
    total = sum(p.numel() for p in model.parameters())
    aux = sum(p.numel() for p in model.auxiliary_head.parameters())
    train, deploy = results['training'], results['deploy']
    assert train['params'] == total - aux
    assert train['backbone_params'] == sum(p.numel() for p in model.backbone.parameters())
    # Merging drops per large-kernel block (C channels): the 5x5 conv (25C), both BNs' affine params (4C),
    # and adds a bias (C). Blocks: one each at C=16, 32, 128 and two at C=64.
    block_channels = [16, 32, 64, 64, 128]
    assert train['params'] - deploy['params'] == sum(28 * c for c in block_channels) == 8_512
    # FLOPs drop by the 5x5 conv (25 MACs per output) and both BNs (2 per element each) at H/4 ... H/32.
    pixels = [16 * 24, 8 * 12, 4 * 6, 4 * 6, 2 * 3]
    conv_drop = sum(25 * c * p for c, p in zip(block_channels, pixels))
    assert train['conv_linear_flops'] - deploy['conv_linear_flops'] == conv_drop == 326_400
    assert train['flops'] - deploy['flops'] == sum(29 * c * p for c, p in zip(block_channels, pixels)) == 378_624
    assert train['backbone_flops'] - deploy['backbone_flops'] == 378_624
    # The whole network forward (backbone, UperNet; no auxiliary head), counted by hooks on every conv.
    model.eval()
    expected = conv_macs(model, lambda: model._forward(torch.randn(1, 3, 64, 96)))
    assert train['flops_by_operator']['conv'] == train['conv_linear_flops'] == sum(expected)
    assert train['flops'] > train['conv_linear_flops']  # plus BN, resizing and pooling
    assert train['shape'] == deploy['shape'] == [64, 96]


def test_tiny_detector_counts_the_whole_model():
    results = config_complexity(Config.fromfile(DET_CONFIG), (64, 96), forms=('deploy', ))
    assert list(results) == ['deploy']
    deploy = results['deploy']
    model = build_model(Config.fromfile(DET_CONFIG))
    model.backbone.switch_to_deploy()
    assert deploy['params'] == sum(p.numel() for p in model.parameters())
    assert 0 < deploy['backbone_flops'] < deploy['flops']
    # Three box heads on 1000 proposals each: shared fc (32x7x7 -> 128), classes (3 + 1), class-wise deltas (4 x 3).
    assert deploy['flops_by_operator']['linear'] == 3 * 1000 * (32 * 7 * 7 * 128 + 128 * 4 + 128 * 12)


def test_get_flops_prints_and_writes_both_forms(tmp_path, monkeypatch, capsys):
    out = tmp_path / 'flops.json'
    run_main(monkeypatch, 'get_flops', SEG_CONFIG, '--shape', 64, 96, '--out', out)
    printed = capsys.readouterr().out
    assert 'input 64x96 (HxW)' in printed
    saved = json.loads(out.read_text())
    assert saved['config'] == str(SEG_CONFIG)
    training = saved['results']['training']
    model = build_model(Config.fromfile(SEG_CONFIG))
    params = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.auxiliary_head.parameters())
    assert training['params'] == params
    training_row = next(line for line in printed.splitlines() if line.startswith('training'))
    assert training_row.split()[1:3] == [f'{params / 1e6:.2f}M', f'{training["flops"] / 1e9:.1f}G']
    assert training['flops'] - saved['results']['deploy']['flops'] == 378_624  # derived in the test above
    run_main(monkeypatch, 'get_flops', SEG_CONFIG, '--shape', 64, 96, '--deploy', '--out', out)
    assert list(json.loads(out.read_text())['results']) == ['deploy']


def test_time_call_warms_up_then_times_each_repeat():
    calls = []

    def work():
        calls.append(1)
        time.sleep(0.02 if len(calls) > 3 else 0.2)  # the warm-up calls are slow and must not be timed

    times = time_call(work, 'cpu', warmup=3, repeats=4)
    assert len(calls) == 7 and len(times) == 4 and all(0.02 <= t < 0.15 for t in times)


def benchmark_args(**kwargs):
    defaults = dict(shape=[64, 64], sizes='fixed', batch_size=2, device='cpu', amp=False, deploy=False, phases=False,
                    profile=False, warmup=1, repeats=2)
    return argparse.Namespace(**dict(defaults, **kwargs))


def batches_for(benchmark, model, cfg, args, mode):
    return benchmark.make_batches(model, cfg.default_scope, args, cfg, mode, torch.device('cpu'))


def training_steps(benchmark, model, cfg, args):
    return benchmark.TrainingSteps(model, cfg, batches_for(benchmark, model, cfg, args, 'train'), torch.device('cpu'),
                                   contextlib.nullcontext, None, lambda samples: None, OwnMemory('cpu'))


@pytest.mark.parametrize('config', [SEG_CONFIG, DET_CONFIG])
def test_training_step_updates_weights_and_statistics(config):
    benchmark = load_tool('benchmark')
    cfg = Config.fromfile(config)
    model = build_model(cfg)
    weight = model.backbone.stages[0].blocks[0].pw1.conv.weight.detach().clone()
    running_mean = model.backbone.stem[0].bn.running_mean.clone()
    args = benchmark_args(batch_size=1 if cfg.default_scope == 'mmdet' else 2)
    backbone_forward = model.backbone.forward
    calls = []

    def slow_first_forward(x):  # what a first call's compiles cost, 1 s
        calls.append(x.shape)
        if len(calls) == 1:
            time.sleep(1.0)
        return backbone_forward(x)

    model.backbone.forward = slow_first_forward
    (result, ) = benchmark.measure_training([training_steps(benchmark, model, cfg, args)], args)
    assert not torch.equal(model.backbone.stages[0].blocks[0].pw1.conv.weight, weight)  # optimizer stepped
    assert not torch.equal(model.backbone.stem[0].bn.running_mean, running_mean)  # forward in train mode
    assert len(result['train_step_times_ms']) == 2 and result['train_step_ms'] > 0
    # The first step is timed on its own, and the warm-up keeps it out of the steady-state times.
    assert result['train_process_first_step_ms'] >= 1000 > result['train_step_max_ms']


def test_timed_phases_give_the_gradients_of_one_step(monkeypatch):
    """The phases split the graph at the features; the gradients must be those of the plain step."""
    benchmark = load_tool('benchmark')
    cfg = Config.fromfile(SEG_CONFIG)
    cfg.model.backbone.drop_path_rate = 0.0  # the same forward in every step
    cfg.model.decode_head.dropout_ratio = cfg.model.auxiliary_head.dropout_ratio = 0.0
    model = build_model(cfg)
    grads = []

    class RecordingOptimWrapper:
        """Records the gradients instead of stepping, so that every step sees the same weights."""

        def step(self):
            grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])

        def zero_grad(self):
            model.zero_grad()

    monkeypatch.setattr(benchmark, 'make_optim_wrapper', lambda *_: RecordingOptimWrapper())
    args = benchmark_args(phases=True, warmup=0, repeats=1)
    benchmark.measure_training([training_steps(benchmark, model, cfg, args)], args)
    (plain, _, phased) = grads  # the plain step, then the phases' warm-up and timed steps
    assert len(plain) == len(phased) == len(list(model.parameters()))
    for a, b in zip(plain, phased):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_interleaved_models_step_in_turn_on_batches_of_the_same_index():
    """First steps and warm-up model by model, then every timed call A B A B, the same batch index for both."""
    benchmark = load_tool('benchmark')
    calls = []

    class Recorder:
        def __init__(self, name):
            self.name, self.device, self.batches = name, torch.device('cpu'), [None] * 4  # 1 warm-up + 3 sizes
            self.model, self.memory, self.phase_times = nn.Identity(), OwnMemory('cpu'), []

        def __call__(self, index, timed_phases=False):
            calls.append((self.name, index))

    results = benchmark.measure_training([Recorder('a'), Recorder('b')], benchmark_args(warmup=1, repeats=3))
    assert calls == [('a', 0), ('b', 0),  # each model's first step (the warm-up)
                     ('a', 1), ('b', 1), ('a', 2), ('b', 2), ('a', 3), ('b', 3),  # first pass: each size new
                     ('a', 1), ('b', 1), ('a', 2), ('b', 2), ('a', 3), ('b', 3)]  # steady state
    assert [len(r['train_step_times_ms']) for r in results] == [3, 3]
    one_size = Recorder('c')
    one_size.batches = [None]  # a fixed crop against multi-scale sizes: no common schedule
    with pytest.raises(SystemExit, match='the configs need the same batch schedule.*--no-interleave times them'):
        benchmark.measure_training([Recorder('a'), one_size], benchmark_args(warmup=1, repeats=3))


def test_own_memory_charges_a_model_its_calls_not_the_others(monkeypatch):
    """Allocator counts stand in for a GPU: weights 100, then the model's first step keeps 30 (optimizer state) with a
    transient peak 50 above its start; another model's 1000 held meanwhile is not charged."""
    allocated = {'now': 1000, 'peak': 1000}  # the other model's

    def allocate(delta):
        allocated['now'] += delta
        allocated['peak'] = max(allocated['peak'], allocated['now'])

    monkeypatch.setattr(torch.cuda, 'memory_allocated', lambda device: allocated['now'])
    monkeypatch.setattr(torch.cuda, 'max_memory_allocated', lambda device: allocated['peak'])
    monkeypatch.setattr(torch.cuda, 'reset_peak_memory_stats', lambda device: allocated.update(peak=allocated['now']))
    memory = OwnMemory('cuda:0')
    with memory.charged():
        allocate(100)  # the weights
    with memory.charged():
        allocate(50), allocate(-20)  # activations freed, 30 kept
    assert (memory.held, memory.peak) == (130, 150)
    with memory.charged():
        allocate(40), allocate(-40)  # a later step: transient only
    assert (memory.held, memory.peak) == (130, 170)
    assert OwnMemory('cpu').peak_mib() is None


def test_multi_scale_sizes_follow_the_pipelines():
    benchmark = load_tool('benchmark')
    rng = random.Random(0)
    train = benchmark.draw_image_sizes('mmdet', 'train', 200, rng)
    test = benchmark.draw_image_sizes('mmdet', 'test', 200, rng)
    for (h, w) in train + test:
        assert max(h, w) <= 1333 and min(h, w) <= 800
    assert {min(h, w) for h, w in train if max(h, w) < 1333} <= set(range(480, 801, 32))
    assert all(min(h, w) == 800 for h, w in test if max(h, w) < 1333)
    assert len(set(train)) > 100 and any(h > w for h, w in test) and any(w > h for h, w in test)
    seg = benchmark.draw_image_sizes('mmseg', 'test', 50, rng)
    assert all(min(h, w) == 512 and max(h, w) <= 2048 for h, w in seg)


def test_multi_scale_batches_pad_to_32_and_keep_each_image_size():
    benchmark = load_tool('benchmark')
    cfg = Config.fromfile(DET_CONFIG)
    model = build_model(cfg)
    args = benchmark_args(shape=None, sizes='multi-scale', warmup=1, repeats=2)
    batches = batches_for(benchmark, model, cfg, args, 'train')
    assert len(batches) == 3
    for inputs, samples in batches:
        assert inputs.shape[2] % 32 == 0 and inputs.shape[3] % 32 == 0
        for sample in samples:
            h, w = sample.img_shape
            assert sample.batch_input_shape == tuple(inputs.shape[2:]) and h <= inputs.shape[2] and w <= inputs.shape[3]
            boxes = sample.gt_instances.bboxes
            assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
            assert sample.gt_instances.masks.masks.shape[1:] == tuple(inputs.shape[2:])


def test_several_sizes_are_timed_when_new_and_again_in_the_steady_state():
    benchmark = load_tool('benchmark')
    calls = []

    class Recorder(nn.Module):
        def __init__(self, form):
            super().__init__()
            self.form = form

        def _forward(self, inputs, samples):
            calls.append((self.form, inputs.shape[-1]))

    batches = [(torch.zeros(1, 3, 8, width), []) for width in (10, 20, 30)]  # a warm-up size and two timed
    results = benchmark.measure_inference({'training': Recorder('t'), 'deploy': Recorder('d')}, batches,
                                          benchmark_args(warmup=1, repeats=2), torch.device('cpu'),
                                          contextlib.nullcontext, lambda samples: None)
    assert calls == [('t', 10), ('d', 10),  # the peak-memory call of each form
                     ('t', 10), ('d', 10),  # warm-up
                     ('t', 20), ('d', 20), ('t', 30), ('d', 30),  # first pass: each size new
                     ('t', 20), ('d', 20), ('t', 30), ('d', 30)]  # steady state
    for form in results.values():
        assert len(form['inference_times_ms']) == len(form['inference_first_call_times_ms']) == 2
    assert benchmark.call_schedule(batches[:1], benchmark_args(warmup=2, repeats=3)) == ([0, 0], [], [0, 0, 0])


def test_fixed_proposals_reach_the_roi_heads_of_every_model():
    benchmark = load_tool('benchmark')
    cfg = Config.fromfile(DET_CONFIG)
    seen = []
    for seed in (0, 1):  # two different random models
        torch.manual_seed(seed)
        model = build_model(cfg)
        args = benchmark_args(shape=[96, 128], batch_size=2)
        batches = batches_for(benchmark, model, cfg, args, 'train')
        proposals = benchmark.FixedProposals(batches, 'train', torch.device('cpu'))
        roi_loss = model.roi_head.loss
        with proposals.patched(model), pytest.MonkeyPatch.context() as patch:
            patch.setattr(model.roi_head, 'loss', lambda x, results, samples: (
                seen.append([r.bboxes.clone() for r in results]), roi_loss(x, results, samples))[1])
            proposals.select(batches[0][1])
            model.train()
            losses = model(*batches[0], mode='loss')
        assert 'loss_rpn_cls' in losses and 'loss_rpn_bbox' in losses  # the RPN still learns
        assert 'predict' not in vars(model.rpn_head) and 'loss_and_predict' not in vars(model.rpn_head)
    first, second = seen
    assert [len(b) for b in first] == [benchmark.FIXED_PROPOSALS['train']] * 2
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    (_, samples), = batches
    gt = samples[0].gt_instances.bboxes
    assert (bbox_overlaps(first[0], gt).max(dim=1).values > 0.5).sum() > 100  # positives for the RoI sampler


def test_config_overrides_apply_to_their_config_only():
    benchmark = load_tool('benchmark')
    assert benchmark.split_config_overrides('a.py@model.backbone.with_cp=False@train_cfg.max_iters=3') == (
        'a.py', {'model.backbone.with_cp': False, 'train_cfg.max_iters': 3})
    assert benchmark.split_config_overrides('mmseg::swin/x.py') == ('mmseg::swin/x.py', {})
    with pytest.raises(ValueError, match="override 'with_cp' is not key=value"):
        benchmark.split_config_overrides('a.py@with_cp')


def test_benchmark_writes_both_forms(tmp_path, monkeypatch, capsys):
    out = tmp_path / 'bench.json'
    run_main(monkeypatch, 'benchmark', SEG_CONFIG, '--shape', 64, 64, '--batch-size', 2, '--device', 'cpu',
             '--warmup', 1, '--repeats', 2, '--profile', '--out', out)
    (saved, ) = json.loads(out.read_text())
    assert list(saved['forms']) == ['training', 'deploy']
    assert 'aten::convolution' in saved['forms']['training']['profile']
    assert (saved['device'], saved['batch_size'], saved['shape'], saved['dtype']) == ('cpu', 2, [64, 64], 'float32')
    training, deploy = saved['forms']['training'], saved['forms']['deploy']
    assert training['train_images_per_s'] == pytest.approx(2e3 / training['train_step_ms'])
    assert 'train_step_ms' not in deploy  # the merged form is for inference
    for form in (training, deploy):
        assert form['inference_images_per_s'] == pytest.approx(2e3 / form['inference_ms'])
        assert form['inference_ms'] == pytest.approx(statistics.median(form['inference_times_ms']))
        assert form['inference_mean_ms'] == pytest.approx(statistics.fmean(form['inference_times_ms']))
    printed = capsys.readouterr().out
    assert 'median of 2 after 1 warm-up' in printed
    rows = [line.split() for line in printed.splitlines() if line.startswith(SEG_CONFIG.stem)]
    assert [row[2] for row in rows] == ['training', 'deploy']
    run_main(monkeypatch, 'benchmark', SEG_CONFIG, '--shape', 64, 64, '--batch-size', 2, '--device', 'cpu',
             '--warmup', 0, '--repeats', 1, '--deploy', '--amp', '--out', out)
    (saved, ) = json.loads(out.read_text())
    assert list(saved['forms']) == ['deploy'] and saved['dtype'] == 'bfloat16 autocast'


def test_benchmark_compares_configs_of_other_backbones_with_phases(tmp_path, monkeypatch, capsys):
    """A peer config (here mmseg's ResNet-18 under the same UperNet) runs beside ours, steps interleaved: no deploy
    form, ratios."""
    peer = tmp_path / 'upernet_r18_tiny.py'
    peer.write_text(f"_base_ = ['{SEG_CONFIG}']\n"
                    "model = dict(backbone=dict(_delete_=True, type='ResNetV1c', depth=18, norm_cfg=dict(type='BN')),\n"
                    "             decode_head=dict(in_channels=[64, 128, 256, 512]),\n"
                    "             auxiliary_head=dict(in_channels=256))\n")
    out = tmp_path / 'bench.json'
    run_main(monkeypatch, 'benchmark', SEG_CONFIG, f'{peer}@model.decode_head.channels=16', '--shape', 64, 64,
             '--device', 'cpu', '--warmup', 1, '--repeats', 3, '--phases', '--out', out)
    ours, theirs = json.loads(out.read_text())
    assert ours['interleaved'] and theirs['interleaved']  # the default for several configs
    assert (ours['backbone'], list(ours['forms'])) == ('RepLKNet', ['training', 'deploy'])
    assert (theirs['backbone'], list(theirs['forms']), theirs['dwconv_impl']) == ('ResNetV1c', ['training'], None)
    assert theirs['overrides'] == {'model.decode_head.channels': 16}
    assert theirs['label'] == 'upernet_r18_tiny@model.decode_head.channels=16'
    for result in (ours, theirs):
        phases = result['forms']['training']['phases_ms']
        assert list(phases) == ['backbone_forward', 'heads_forward_loss', 'heads_backward', 'backbone_backward',
                                'optimizer']
        assert all(v > 0 for v in phases.values())
        # The phases partition a step: their sum is a step's time, give or take the CPU's noise.
        training = result['forms']['training']
        assert len(training['phases_step_sums_ms']) == 3
        assert 0.5 < training['phases_sum_ms'] / training['train_step_ms'] < 2
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith('upernet_r18_tiny@')]
    (row, ) = rows
    train_ratio = theirs['forms']['training']['train_step_ms'] / ours['forms']['training']['train_step_ms']
    assert float(row[6]) == pytest.approx(train_ratio, abs=0.006)


def test_benchmark_keeps_each_dtype_measured_when_a_later_one_fails(tmp_path, monkeypatch, capsys):
    """A run cut short (here the second dtype's measurement raises) has printed and saved the first dtype's results."""
    tool = load_tool('benchmark')
    measure = tool.measure

    def measure_bf16_only(runs, amp_dtype, args):
        if amp_dtype != 'bfloat16':
            raise KeyboardInterrupt(amp_dtype)
        return measure(runs, amp_dtype, args)

    monkeypatch.setattr(tool, 'measure', measure_bf16_only)
    out = tmp_path / 'bench.json'
    monkeypatch.setattr('sys.argv', ['benchmark.py', str(SEG_CONFIG), '--shape', '64', '64', '--device', 'cpu',
                                     '--warmup', '0', '--repeats', '1', '--amp', '--amp-dtype', 'bfloat16', 'float16',
                                     '--out', str(out)])
    with pytest.raises(KeyboardInterrupt, match='float16'):
        tool.main()
    (saved, ) = json.loads(out.read_text())
    assert saved['dtype'] == 'bfloat16 autocast' and saved['forms']['training']['train_step_ms'] > 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(SEG_CONFIG.stem)]
    assert [(row[1], row[2]) for row in rows] == [('bfloat16', 'training'), ('bfloat16', 'deploy')]


@pytest.mark.parametrize('argv, interleave', [
    ([SEG_CONFIG], False),
    ([SEG_CONFIG, DET_CONFIG], True),
    ([SEG_CONFIG, DET_CONFIG, '--no-interleave'], False),
    ([SEG_CONFIG, '--interleave'], True),
])
def test_several_configs_are_interleaved_unless_asked_not_to(monkeypatch, argv, interleave):
    monkeypatch.setattr('sys.argv', ['benchmark.py', *map(str, argv)])
    assert load_tool('benchmark').parse_args().interleave is interleave


def test_benchmark_rejects_bad_arguments(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_main(monkeypatch, 'benchmark', SEG_CONFIG, '--repeats', 0)
    assert '--repeats must be at least 1' in capsys.readouterr().err


def test_allocator_counts_read_the_caching_allocators_calls(monkeypatch):
    """cudaMalloc/cudaFree calls and cache-flushing retries, from torch.cuda.memory_stats; none off CUDA."""
    assert allocator_counts('cpu') == {}
    stats = {'num_device_alloc': 7, 'num_device_free': 2, 'allocated_bytes.all.peak': 10}
    monkeypatch.setattr(torch.cuda, 'memory_stats', lambda device: stats)
    assert allocator_counts('cuda:0') == dict(num_device_alloc=7, num_device_free=2, num_alloc_retries=0)
