"""Inference throughput and training-step time of one or more configs' models, side by side in one process.

Inference: the network forward (``mode='tensor'``: backbone, neck, heads; no post-processing) in eval mode
under no_grad. Training step: forward with loss, backward and the config's optimizer step, on synthetic inputs
and labels fed straight to the model (no dataloader). Each is warmed up, then timed once per repeat, and the
median (and mean, which shows stalls) is reported (``replk_mm.apis.time_call``). ``--amp`` runs both under
autocast, bf16 by default (float16 adds dynamic loss scaling to the training step; give both to measure
both). Inputs are NCHW; cudnn.benchmark follows the config's ``env_cfg`` as mmengine's Runner does.

Where a backbone can be re-parameterised (RepLKNet), its deploy form (large kernels merged) is measured too,
for inference only, call by call in turn with the training form so that neither gains from going second.
Configs of any MM library (``mmseg::swin/...``) work; the first config is the reference for the printed
ratios. ``CONFIG@key=value@key=value`` overrides settings of one config (``--cfg-options``: of all).

``--sizes multi-scale`` measures as users run: a new size per call, drawn as the pipelines make them
(detection: shorter side 480-800 for training and 800 for testing, longer side at most 1333, any aspect,
each image's own size in a batch padded to 32; segmentation: whole-image testing at shorter side 512,
training at the fixed crop). ``--phases`` splits the training step into backbone(+neck) forward, heads
forward with loss, heads backward, backbone(+neck) backward and optimizer step. ``--fixed-proposals``
(two-stage detectors) replaces the RPN's proposals by the same boxes for every model, so that the RoI heads
of different backbones do the same work. ``--compile-backbone MODE`` runs the backbone through torch.compile.
With several sizes, each timed size is run twice: the first pass (``*_first_call_*``) shows what a size new
to the process costs, the second the steady state. Caches are per process, so a later config's first pass
finds the layers it shares with an earlier config (FPN, heads) warm: run one config per process to compare
first-pass costs. ``--profile`` adds torch.profiler's table of three training steps to the JSON.

Training memory is the model's own peak: its weights, optimizer state, CUDA-graph pools and its step's
activations, not the input batches or another model (``replk_mm.apis.OwnMemory``). Several configs are
interleaved by default: every config's model is built first and their training steps are timed in turn
(A B A B ...) on batches of the same sizes. Config after config (``--no-interleave``), the one timed first came
out 5-20% faster, in either order, in a Cascade comparison of two configs on an H200 (docs/benchmarks.md), more
than the difference it was to measure; interleaved, the verdict held in both orders.

    python tools/benchmark.py configs/upernet_replknet31b_ade20k.py \\
        mmseg::swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py --amp --phases
"""
import argparse
import contextlib
import copy
import json
import math
import os
import os.path as osp
import platform
import random
import statistics
import time

import torch
from mmengine.config import DictAction
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper

from replk_mm.apis import (
    OwnMemory,
    allocator_counts,
    build_model,
    config_scope,
    load_run_config,
    peak_memory_mib,
    random_boxes,
    reset_peak_memory,
    synthetic_data_samples,
    time_call,
)
from replk_mm.checkpoint import switch_to_deploy

BENCHMARK_SHAPES = {'mmseg': (512, 512), 'mmdet': (800, 1280)}  # (H, W): the training crop; a 1333x800-class image
AMP_DTYPES = {'bfloat16': torch.bfloat16, 'float16': torch.float16}
PHASES = ('backbone_forward', 'heads_forward_loss', 'heads_backward', 'backbone_backward', 'optimizer')
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune-no-cudagraphs')
# Proposals per image with --fixed-proposals: the RPN's max_per_img in mmdet's Cascade/Mask R-CNN configs.
FIXED_PROPOSALS = {'train': 2000, 'test': 1000}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+', metavar='config',
                        help='config files (or package::path of an installed MM package), each optionally followed '
                             'by @key=value overrides; the first is the reference')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width with --sizes fixed (default: 512 512 segmentation, '
                             '800 1280 detection)')
    parser.add_argument('--sizes', choices=['fixed', 'multi-scale'], default='fixed',
                        help='fixed: every call at --shape; multi-scale: a new size per call, as the pipelines '
                             'make them (default: fixed)')
    parser.add_argument('--batch-size', type=int, default=2,
                        help="images per step (default: 2, the configs' images per GPU; UperNet's training needs "
                             'at least 2: its 1x1 pooled branch has a BN)')
    parser.add_argument('--device', choices=['cuda', 'cpu'], help='default: cuda if available')
    parser.add_argument('--amp', action='store_true', help='autocast for inference and training')
    parser.add_argument('--amp-dtype', choices=sorted(AMP_DTYPES), nargs='+', default=['bfloat16'],
                        help='autocast dtype(s) with --amp, each measured in turn (default: bfloat16; float16 adds '
                             'dynamic loss scaling)')
    parser.add_argument('--deploy', action='store_true', help='measure the deploy (merged) form only')
    parser.add_argument('--phases', action='store_true',
                        help='also time the phases of a training step (backbone fwd, heads fwd+loss, heads bwd, '
                             'backbone bwd, optimizer)')
    parser.add_argument('--fixed-proposals', action='store_true',
                        help='two-stage detectors: the same proposals for every model instead of the RPN\'s')
    parser.add_argument('--compile-backbone', choices=COMPILE_MODES, metavar='MODE',
                        help=f'torch.compile the backbone in this mode ({", ".join(COMPILE_MODES)})')
    parser.add_argument('--no-training', action='store_true', help='measure inference only')
    parser.add_argument('--interleave', action=argparse.BooleanOptionalAction,
                        help="time the configs' training steps in turn (A B A B ...), all models built at once, so "
                             'that what drifts in the process falls on each alike: the default for several configs; '
                             '--no-interleave times them config after config (the memory of one model at a time)')
    parser.add_argument('--profile', action='store_true',
                        help="add torch.profiler's table of three training steps to the JSON (key 'profile')")
    parser.add_argument('--warmup', type=int, default=5, help='untimed calls before timing (default: 5)')
    parser.add_argument('--repeats', type=int, default=20, help='timed calls; the median is reported (default: 20)')
    parser.add_argument('--out', help='write the results (a list, one entry per config and dtype) as JSON to this file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of every config, key=value')
    args = parser.parse_args()
    for name in ('batch_size', 'repeats'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1')
    if args.warmup < 0:
        parser.error('--warmup must not be negative')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available')
    if args.shape and args.sizes != 'fixed':
        parser.error('--shape goes with --sizes fixed only')
    try:
        args.runs = [split_config_overrides(config) for config in args.configs]
    except ValueError as exc:
        parser.error(str(exc))
    if args.interleave is None:
        args.interleave = len(args.runs) > 1
    return args


def split_config_overrides(spec):
    """``path@key=value@key=value`` -> (path, {key: value}), values parsed as ``--cfg-options`` parses them."""
    path, *pairs = spec.split('@')
    overrides = argparse.Namespace()
    for pair in pairs:
        if '=' not in pair:
            raise ValueError(f'config {spec}: override {pair!r} is not key=value')
    DictAction(option_strings=[], dest='overrides')(None, overrides, pairs)
    return path, getattr(overrides, 'overrides', {})


class PhaseClock:
    """Marks points inside one call (CUDA events, or perf_counter on the CPU) and returns the gaps in seconds."""

    def __init__(self, device):
        self.device = device
        self.marks = []

    def mark(self):
        if self.device.type == 'cuda':
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def gaps(self):
        if self.device.type == 'cuda':
            self.marks[-1].synchronize()
            gaps = [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        else:
            gaps = [b - a for a, b in zip(self.marks, self.marks[1:])]
        self.marks = []
        return gaps


def make_optim_wrapper(model, cfg):
    """The config's optimizer and parameter-wise settings, without its precision settings (those are --amp's)."""
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    optim_cfg['type'] = 'OptimWrapper'
    for key in ('loss_scale', 'dtype'):
        optim_cfg.pop(key, None)
    return build_optim_wrapper(model, optim_cfg)


def crop_size(cfg, scope):
    """The segmentation config's training crop (its data preprocessor pads every batch to it)."""
    size = cfg.model.get('data_preprocessor', {}).get('size') or BENCHMARK_SHAPES[scope]
    return tuple(size)


def draw_image_sizes(scope, mode, count, rng):
    """``count`` (H, W) image sizes as the pipelines make them (see the module's docstring)."""
    sizes = []
    for _ in range(count):
        aspect = rng.uniform(0.6, 1.8)  # W / H: portrait to wide
        if scope == 'mmdet':
            short = rng.choice(range(480, 801, 32)) if mode == 'train' else 800
            long_limit = 1333
        else:
            short, long_limit = 512, 2048
        scale = min(short / min(1.0, aspect), long_limit / max(1.0, aspect))
        sizes.append((max(32, round(scale)), max(32, round(scale * aspect))))
    return sizes


def pad_to(size, divisor):
    return tuple(-(-side // divisor) * divisor for side in size)


def make_batch(model, scope, image_sizes, device, with_labels, seed):
    """Inputs (padded to the largest image, as the data preprocessors do) and data samples of these images."""
    batch_shape = tuple(max(side) for side in zip(*image_sizes))
    if scope == 'mmdet':
        batch_shape = pad_to(batch_shape, 32)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(len(image_sizes), 3, *batch_shape, generator=generator).to(device)
    samples = []
    for index, size in enumerate(image_sizes):
        (sample, ) = synthetic_data_samples(model, scope, 1, size, with_labels=with_labels, seed=seed + index)
        sample.set_metainfo(dict(batch_input_shape=batch_shape, pad_shape=batch_shape))
        if with_labels and scope == 'mmdet':
            sample.gt_instances.masks = sample.gt_instances.masks.pad(batch_shape)
        elif with_labels:
            labels = sample.gt_sem_seg.data
            padded = labels.new_full((1, *batch_shape), 255)  # mmseg pads labels with its ignore index
            padded[:, :size[0], :size[1]] = labels
            sample.gt_sem_seg.data = padded
        samples.append(sample.to(device))
    return inputs, samples


def make_batches(model, scope, args, cfg, mode, device):
    """One batch per call: ``warmup + repeats`` of them with --sizes multi-scale (the same for every config),
    else one."""
    if args.sizes == 'fixed' or (scope == 'mmseg' and mode == 'train'):
        shape = tuple(args.shape or (crop_size(cfg, scope) if scope == 'mmseg' else BENCHMARK_SHAPES[scope]))
        batches = [[shape] * args.batch_size]
    else:
        rng = random.Random(0 if mode == 'train' else 1)
        batches = [draw_image_sizes(scope, mode, args.batch_size, rng) for _ in range(args.warmup + args.repeats)]
    return [make_batch(model, scope, sizes, device, mode == 'train', seed=index * 100)
            for index, sizes in enumerate(batches)]


def fixed_proposals(sample, count, seed, device):
    """``count`` boxes in the sample's image: a quarter jittered around its ground truth (if any), the rest
    anywhere, with random scores."""
    from mmengine.structures import InstanceData
    generator = torch.Generator().manual_seed(seed)
    height, width = sample.metainfo['img_shape']
    gt = sample.gt_instances.bboxes.cpu() if 'gt_instances' in sample else torch.zeros(0, 4)
    near = count // 4 if len(gt) else 0
    boxes = random_boxes(count - near, (height, width), generator, min_side=0.02, max_side=0.5)
    if near:
        picks = gt[torch.randint(len(gt), (near, ), generator=generator)]
        sides = (picks[:, 2:] - picks[:, :2]).repeat(1, 2)
        jittered = picks + (torch.rand(picks.shape, generator=generator) - 0.5) * 0.3 * sides
        boxes = torch.cat([boxes, jittered.clamp(min=0).minimum(torch.tensor([width, height] * 2) - 1.0)])
    return InstanceData(bboxes=boxes.to(device), scores=torch.rand(count, generator=generator).to(device),
                        labels=torch.zeros(count, dtype=torch.long, device=device))


class FixedProposals:
    """The same proposals for every model: the RPN still runs (and its loss is counted), but the RoI heads get
    boxes fixed per batch, so that their work does not depend on a randomly initialised backbone's RPN."""

    def __init__(self, batches, mode, device):
        count = FIXED_PROPOSALS[mode]
        self.by_batch = {id(samples): [fixed_proposals(s, count, i, device) for i, s in enumerate(samples)]
                         for _, samples in batches}
        self.current = None

    def select(self, samples):
        self.current = self.by_batch[id(samples)]

    def proposals(self):
        return [p.clone() for p in self.current]  # the RoI heads rename fields in place

    @contextlib.contextmanager
    def patched(self, model):
        rpn = model.rpn_head

        def loss_and_predict(x, batch_data_samples, proposal_cfg=None):
            return rpn.loss(x, batch_data_samples), self.proposals()

        def predict(x, batch_data_samples, rescale=False):
            rpn(x)
            return self.proposals()

        rpn.loss_and_predict, rpn.predict = loss_and_predict, predict
        try:
            yield
        finally:
            del rpn.loss_and_predict, rpn.predict


def patch_proposals(stack, models, batches, mode, device, fixed):
    """With ``fixed``, the same proposals for ``models`` until ``stack`` closes; returns the function that picks
    a batch's (a no-op without)."""
    if not fixed:
        return lambda samples: None
    proposals = FixedProposals(batches, mode, device)
    for model in models:
        stack.enter_context(proposals.patched(model))
    return proposals.select


def autocast_for(device, amp_dtype):
    if amp_dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=AMP_DTYPES[amp_dtype])


def summary(times, batch_size, prefix):
    median, mean = statistics.median(times), statistics.fmean(times)
    return {f'{prefix}_ms': median * 1e3, f'{prefix}_mean_ms': mean * 1e3, f'{prefix}_max_ms': max(times) * 1e3,
            f'{prefix}_images_per_s': batch_size / median, f'{prefix}_times_ms': [t * 1e3 for t in times]}


def call_schedule(batches, args):
    """Batch indices of (warm-up calls, first pass, steady-state pass).

    One fixed size: ``warmup`` calls, then ``repeats`` timed ones. Several sizes: the warm-up calls take
    sizes of their own; the timed sizes are run twice, first when each is new to the process (what a new size
    costs: kernel compiles, cuDNN plans, allocator growth), then again (the steady state, the headline).
    """
    if len(batches) == 1:
        return [0] * args.warmup, [], [0] * args.repeats
    timed = list(range(args.warmup, args.warmup + args.repeats))
    return list(range(args.warmup)), timed, timed


def measure_inference(models, batches, args, device, autocast, select_proposals):
    """Per form: the forward timed call by call, the forms in turn (A B A B ...), each on the same batches."""

    def infer(model, index):
        inputs, samples = batches[index]
        select_proposals(samples)
        with torch.no_grad(), autocast():
            model._forward(inputs, samples)

    def timed_pass(indices):
        times = {form: [] for form in models}
        for index in indices:
            for form, model in models.items():
                times[form] += time_call(lambda: infer(model, index), device, 0, 1)
        return times

    results = {}
    for form, model in models.items():
        model.eval()
        reset_peak_memory(device)
        # The process's first call of this form: kernel compiles (Triton's, for a RepLKNet config only the
        # first in the process), cuDNN plans, allocator growth.
        first_ms = time_call(lambda: infer(model, 0), device, 0, 1)[0] * 1e3
        results[form] = dict(inference_peak_memory_mib=peak_memory_mib(device), inference_process_first_ms=first_ms)
    warmup, first, steady = call_schedule(batches, args)
    timed_pass(warmup)
    first_times, steady_times = timed_pass(first), timed_pass(steady)
    for form in models:
        results[form].update(summary(steady_times[form], args.batch_size, 'inference'))
        if first:
            results[form].update(summary(first_times[form], args.batch_size, 'inference_first_call'))
    return results


class TrainingSteps:
    """One model's training step on its batches (one per call), with the config's optimizer; ``memory`` is the
    model's own (:class:`~replk_mm.apis.OwnMemory`), so that models timed in turn are not charged each other's."""

    def __init__(self, model, cfg, batches, device, autocast, amp_dtype, select_proposals, memory):
        self.model, self.batches, self.autocast, self.select_proposals = model, batches, autocast, select_proposals
        self.optim_wrapper = make_optim_wrapper(model, cfg)
        self.scaler = torch.amp.GradScaler(device.type) if amp_dtype == 'float16' else None
        self.device, self.clock = device, PhaseClock(device)
        self.phase_times = []
        self.memory = memory

    def __call__(self, index, timed_phases=False):
        with self.memory.charged():
            self._step(index, timed_phases)

    def _step(self, index, timed_phases):
        model, autocast, scaler, clock = self.model, self.autocast, self.scaler, self.clock
        inputs, samples = self.batches[index]
        torch.manual_seed(index)  # the samplers draw the same RoIs for every model
        self.select_proposals(samples)
        if not timed_phases:
            with autocast():
                loss, _ = model.parse_losses(model(inputs, samples, mode='loss'))
            (scaler.scale(loss) if scaler else loss).backward()
        else:
            clock.mark()
            with autocast():
                features = model.extract_feat(inputs)
            clock.mark()
            # The heads start from leaf copies of the features, so that their backward and the backbone's are
            # timed apart; the gradients are those of one graph.
            head_inputs = tuple(f.detach().requires_grad_() for f in features)
            model.extract_feat = lambda _: head_inputs
            try:
                with autocast():
                    loss, _ = model.parse_losses(model(inputs, samples, mode='loss'))
            finally:
                del model.extract_feat
            clock.mark()
            (scaler.scale(loss) if scaler else loss).backward()
            clock.mark()
            pairs = [(f, h.grad) for f, h in zip(features, head_inputs) if h.grad is not None]
            torch.autograd.backward([f for f, _ in pairs], [g for _, g in pairs])
            clock.mark()
        if scaler:
            scaler.step(self.optim_wrapper.optimizer)
            scaler.update()
        else:
            self.optim_wrapper.step()
        self.optim_wrapper.zero_grad()
        if timed_phases:
            clock.mark()
            self.phase_times.append(clock.gaps())


def measure_training(steps, args):
    """Training-step times, own peak memory[, phase medians] of each :class:`TrainingSteps`, one batch per call.

    Several are timed in turn, call by call (A B A B ...), each on its own batch of the same index, so that
    whatever drifts in the process (clocks, caches, the host) falls on all alike. Their first steps and
    warm-up run model by model.
    """
    device = steps[0].device

    def timed_pass(indices, timed_phases=False):
        times = [[] for _ in steps]
        for index in indices:
            for step, step_times in zip(steps, times):
                step_times += time_call(lambda: step(index, timed_phases), device, 0, 1)
        return times

    warmup, first, steady = call_schedule(steps[0].batches, args)
    if any(call_schedule(step.batches, args) != (warmup, first, steady) for step in steps[1:]):
        raise SystemExit('error: --interleave (the default for several configs): the configs need the same batch '
                         'schedule (the same scope and --sizes); --no-interleave times them one after the other')
    results = []
    for step in steps:
        step.model.train()
        # The model's first training step (the first warm-up step): compiles, cuDNN plans, CUDA-graph capture,
        # optimizer state.
        process_first = time_call(lambda: step(warmup[0]), device, 0, 1) if warmup else []
        for index in warmup[1:]:
            step(index)
        results.append({'train_process_first_step_ms': process_first[0] * 1e3} if process_first else {})
    if first:
        for result, times in zip(results, timed_pass(first)):
            result.update(summary(times, args.batch_size, 'train_step_first_call'))
    before = allocator_counts(device)
    for result, times in zip(results, timed_pass(steady)):
        result.update(summary(times, args.batch_size, 'train_step'))
        result['train_images_per_s'] = result.pop('train_step_images_per_s')
    # Counted over every model's steady-state steps together.
    allocator = {f'train_step_{name}': count - before[name] for name, count in allocator_counts(device).items()}
    for result, step in zip(results, steps):
        result.update(allocator)
        result['train_peak_memory_mib'] = step.memory.peak_mib()
    if args.phases:
        timed_pass(steady[:1] + steady, timed_phases=True)
        for result, step in zip(results, steps):
            phase_times = step.phase_times[1:]  # the warm-up call
            result['phases_ms'] = {name: statistics.median(t[i] for t in phase_times) * 1e3
                                   for i, name in enumerate(PHASES)}
            # The sum of the phases' medians is not a step's median where steps vary (multi-scale): each step's own.
            result['phases_step_sums_ms'] = [sum(t) * 1e3 for t in phase_times]
            result['phases_sum_ms'] = statistics.median(result['phases_step_sums_ms'])
    if args.profile:
        for result, step in zip(results, steps):
            result['profile'] = profile_table(lambda: [step(index) for index in steady[:3]], device)
    return results


def profile_table(fn, device):
    """torch.profiler's table of the ops and kernels of ``fn``, heaviest first (device time on CUDA)."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    with profile(activities=activities) as prof:
        fn()
    sort_by = 'cuda_time_total' if device.type == 'cuda' else 'cpu_time_total'
    return prof.key_averages().table(sort_by=sort_by, row_limit=40)


def compile_backbone(model, mode):
    if mode:
        model.backbone = torch.compile(model.backbone, mode=mode)


def run(config, overrides, amp_dtype, args, stack):
    """Build the config's model(s) and measure inference; returns the result and the model's
    :class:`TrainingSteps` (None with --no-training or --deploy), whose fixed proposals stay patched in until
    ``stack`` closes. The deploy form is dropped before training, so that it is not in the training memory."""
    cfg = load_run_config(config, {**(args.cfg_options or {}), **overrides})
    scope = config_scope(cfg)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    cudnn_benchmark = device.type == 'cuda' and bool(cfg.get('env_cfg', {}).get('cudnn_benchmark', False))
    torch.backends.cudnn.benchmark = cudnn_benchmark
    memory = OwnMemory(device)
    with memory.charged():  # the weights
        model = build_model(cfg).to(device)
    models = {}
    if not args.deploy:
        models['training'] = model
    if hasattr(model.backbone, 'switch_to_deploy'):
        models['deploy'] = copy.deepcopy(model) if models else model
        switch_to_deploy(models['deploy'])
    elif args.deploy:
        raise SystemExit(f'error: {cfg.filename}: --deploy: model.backbone is {type(model.backbone).__name__}, '
                         'which has no deploy form (only RepLKNet backbones can be re-parameterised)')
    for form_model in models.values():
        compile_backbone(form_model, args.compile_backbone)
    fixed = args.fixed_proposals and hasattr(model, 'rpn_head') and hasattr(model, 'roi_head')
    autocast = autocast_for(device, amp_dtype)
    forms, steps = {}, None
    for mode in ('test', 'train'):
        if mode == 'train' and (args.no_training or 'training' not in models):
            continue
        batches = make_batches(model, scope, args, cfg, mode, device)
        if mode == 'test':
            with contextlib.ExitStack() as patches:
                select_proposals = patch_proposals(patches, models.values(), batches, mode, device, fixed)
                forms = measure_inference(models, batches, args, device, autocast, select_proposals)
        else:
            models.pop('deploy', None)
            select_proposals = patch_proposals(stack, [model], batches, mode, device, fixed)
            steps = TrainingSteps(model, cfg, batches, device, autocast, amp_dtype, select_proposals, memory)
    backbone_cfg = cfg.model.backbone
    result = dict(
        config=cfg.filename, overrides=overrides, label=label(config, overrides), backbone=backbone_cfg.type,
        device=device.type,
        device_name=torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu',
        torch=torch.__version__, threads=torch.get_num_threads(), cudnn_benchmark=cudnn_benchmark,
        dtype=f'{amp_dtype} autocast' if amp_dtype else 'float32', memory_format='NCHW',
        batch_size=args.batch_size, sizes=args.sizes,
        shape=None if args.sizes != 'fixed' else list(args.shape or BENCHMARK_SHAPES[scope]),
        fixed_proposals=fixed, compile_backbone=args.compile_backbone, interleaved=args.interleave,
        warmup=args.warmup, repeats=args.repeats,
        dwconv_impl=(os.environ.get('REPLK_DWCONV_IMPL') or backbone_cfg.get('dwconv_impl', 'auto')
                     if backbone_cfg.type in ('RepLKNet', 'replk_mm.RepLKNet') else None),
        forms=forms)
    return result, steps


def measure(runs, amp_dtype, args):
    """Results of the configs in ``runs`` in one dtype: one after the other, or (--interleave) their training
    steps in turn, all models built first."""
    groups = [runs] if args.interleave else [[run_] for run_ in runs]
    results = []
    for group in groups:
        with contextlib.ExitStack() as stack:
            prepared = [run(config, overrides, amp_dtype, args, stack) for config, overrides in group]
            trained = [(result, steps) for result, steps in prepared if steps is not None]
            if trained:
                timings = measure_training([steps for _, steps in trained], args)
                for (result, _), timing in zip(trained, timings):
                    result['forms']['training'].update(timing)
            results += [result for result, _ in prepared]
    return results


def label(config, overrides):
    name = osp.splitext(osp.basename(config.split('::')[-1]))[0]
    return '@'.join([name] + [f'{key}={value}' for key, value in overrides.items()])


def ratio(value, reference):
    return value / reference if reference and not math.isnan(reference) else float('nan')


def print_table(results, args):
    first = results[0]
    print(f'batch {first["batch_size"]}, sizes {first["sizes"]}, {first["device_name"]}, median of {args.repeats} '
          f'after {args.warmup} warm-up; ratios against the first config\'s training form in the same dtype')
    print(f'{"config":<56} {"dtype":<9} {"form":<9} {"infer img/s":>12} {"x ref":>6} {"train ms":>9} {"x ref":>6}'
          f' {"train MiB":>10}')
    references = {}
    for result in results:
        forms = result['forms']
        references.setdefault(result['dtype'], forms.get('training') or forms['deploy'])
    for result in results:
        reference = references[result['dtype']]
        for form, r in result['forms'].items():
            train_ms = r.get('train_step_ms', float('nan'))
            print(f'{result["label"][:56]:<56} {result["dtype"].split()[0]:<9} {form:<9} '
                  f'{r["inference_images_per_s"]:>12.2f} '
                  f'{ratio(r["inference_images_per_s"], reference["inference_images_per_s"]):>6.2f} '
                  f'{train_ms:>9.1f} {ratio(train_ms, reference.get("train_step_ms")):>6.2f} '
                  f'{r.get("train_peak_memory_mib") or 0:>10.0f}')
            if 'phases_ms' in r:
                print('    phases (ms): ' + ', '.join(f'{k} {v:.1f}' for k, v in r['phases_ms'].items())
                      + f'; median of the steps\' sums {r["phases_sum_ms"]:.1f}')
            if 'train_step_num_device_alloc' in r:
                print(f'    allocator over the timed steps: {r["train_step_num_device_alloc"]} cudaMalloc, '
                      f'{r["train_step_num_device_free"]} cudaFree, {r["train_step_num_alloc_retries"]} retries')


def main():
    args = parse_args()
    MMLogger.get_instance('benchmark', log_level='WARNING')  # quiet the optimizer's per-parameter INFO lines
    amp_dtypes = args.amp_dtype if args.amp else [None]
    results = []
    for amp_dtype in amp_dtypes:  # each dtype's table and JSON as soon as measured: a run cut short keeps them
        measured = measure(args.runs, amp_dtype, args)
        results += measured
        print_table(measured, args)
        if args.out:
            os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
            with open(args.out, 'w') as f:
                json.dump(results, f, indent=2)


if __name__ == '__main__':
    main()
