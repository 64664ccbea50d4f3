"""Inference throughput and training-step time of one or more configs' models, side by side in one process.

Inference: the network forward (``mode='tensor'``: backbone, neck, heads; no post-processing) in eval mode
under no_grad. Training step: forward with loss, backward and the config's optimizer step, on synthetic inputs
and labels fed straight to the model (no dataloader). Each is warmed up, then timed once per repeat, and the
median is reported (``replk_mm.apis.time_call``). ``--amp`` runs both under autocast, bf16 by default
(``--amp-dtype float16`` adds dynamic loss scaling to the training step). Inputs are NCHW; cudnn.benchmark
is on. Each config is measured in training form and then, where its backbone can be re-parameterised
(RepLKNet), with its large kernels merged (``--deploy``: merged only). Configs of any MM library
(``mmseg::swin/...``) work; the first config is the reference for the printed ratios. ``--phases`` splits the
training step into backbone (+neck) forward, heads forward with loss, backward and optimizer step.

    python tools/benchmark.py configs/upernet_replknet31b_ade20k.py \\
        mmseg::swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py --amp --phases
"""
import argparse
import contextlib
import copy
import json
import os
import os.path as osp
import platform
import statistics
import time

import torch
from mmengine.config import DictAction
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper

from replk_mm.apis import (
    build_model,
    config_scope,
    load_run_config,
    peak_memory_mib,
    reset_peak_memory,
    synthetic_data_samples,
    time_call,
)
from replk_mm.checkpoint import switch_to_deploy

BENCHMARK_SHAPES = {'mmseg': (512, 512), 'mmdet': (800, 1280)}  # (H, W): the training crop; a 1333x800-class image
AMP_DTYPES = {'bfloat16': torch.bfloat16, 'float16': torch.float16}
PHASES = ('backbone_forward', 'heads_forward_loss', 'backward', 'optimizer')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+', metavar='config',
                        help='config files (or package::path of an installed MM package); the first is the reference')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: 512 512 segmentation, 800 1280 detection)')
    parser.add_argument('--batch-size', type=int, default=2,
                        help="images per step (default: 2, the configs' images per GPU; UperNet's training needs "
                             'at least 2: its 1x1 pooled branch has a BN)')
    parser.add_argument('--device', choices=['cuda', 'cpu'], help='default: cuda if available')
    parser.add_argument('--amp', action='store_true', help='autocast for inference and training')
    parser.add_argument('--amp-dtype', choices=sorted(AMP_DTYPES), default='bfloat16',
                        help='autocast dtype with --amp (default: bfloat16; float16 adds dynamic loss scaling)')
    parser.add_argument('--deploy', action='store_true', help='measure the deploy (merged) form only')
    parser.add_argument('--phases', action='store_true',
                        help='also time the phases of a training step (backbone fwd, heads fwd+loss, backward, '
                             'optimizer)')
    parser.add_argument('--warmup', type=int, default=5, help='untimed calls before timing (default: 5)')
    parser.add_argument('--repeats', type=int, default=20, help='timed calls; the median is reported (default: 20)')
    parser.add_argument('--out', help='write the results (a list, one entry per config) as JSON to this file')
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
    return args


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


def measure(model, cfg, scope, args, device, shape):
    """{inference and training-step medians, all times, peak memory[, phase medians]} of ``model`` as it is."""
    batch = args.batch_size
    amp_dtype = AMP_DTYPES[args.amp_dtype]
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if args.amp else contextlib.nullcontext
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, 3, *shape, generator=generator).to(device)
    samples = None if scope == 'mmseg' else [s.to(device) for s in synthetic_data_samples(model, scope, batch, shape)]

    def infer():
        with torch.no_grad(), autocast():
            model._forward(inputs, samples)

    model.eval()
    reset_peak_memory(device)
    infer_times = time_call(infer, device, args.warmup, args.repeats)
    infer_memory = peak_memory_mib(device)

    labelled = [s.to(device) for s in synthetic_data_samples(model, scope, batch, shape, with_labels=True)]
    optim_wrapper = make_optim_wrapper(model, cfg)
    scaler = torch.amp.GradScaler(device.type) if args.amp and amp_dtype == torch.float16 else None
    clock = PhaseClock(device)
    phase_times = []

    def train_step(timed_phases=False):
        if timed_phases:
            clock.mark()
            with autocast():
                features = model.extract_feat(inputs)
            clock.mark()
            model.extract_feat = lambda _: features  # the heads' forward reuses the features timed above
            try:
                with autocast():
                    losses = model(inputs, labelled, mode='loss')
            finally:
                del model.extract_feat
        else:
            with autocast():
                losses = model(inputs, labelled, mode='loss')
        loss, _ = model.parse_losses(losses)
        if timed_phases:
            clock.mark()
        (scaler.scale(loss) if scaler else loss).backward()
        if timed_phases:
            clock.mark()
        if scaler:
            scaler.step(optim_wrapper.optimizer)
            scaler.update()
        else:
            optim_wrapper.step()
        optim_wrapper.zero_grad()
        if timed_phases:
            clock.mark()
            phase_times.append(clock.gaps())

    model.train()
    reset_peak_memory(device)
    train_times = time_call(train_step, device, args.warmup, args.repeats)
    train_memory = peak_memory_mib(device)
    infer_s, train_s = statistics.median(infer_times), statistics.median(train_times)
    result = dict(inference_images_per_s=batch / infer_s, inference_ms=infer_s * 1e3,
                  train_step_ms=train_s * 1e3, train_images_per_s=batch / train_s,
                  inference_times_ms=[t * 1e3 for t in infer_times],
                  train_step_times_ms=[t * 1e3 for t in train_times],
                  inference_peak_memory_mib=infer_memory, train_peak_memory_mib=train_memory)
    if args.phases:
        time_call(lambda: train_step(timed_phases=True), device, 1, args.repeats)
        phase_times = phase_times[1:]  # the warm-up call
        result['phases_ms'] = {name: statistics.median(t[i] for t in phase_times) * 1e3
                               for i, name in enumerate(PHASES)}
    return result


def run(cfg, args):
    scope = config_scope(cfg)
    shape = tuple(args.shape or BENCHMARK_SHAPES[scope])
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    model = build_model(cfg).to(device)
    forms = {}
    if not args.deploy:
        forms['training'] = measure(model, cfg, scope, args, device, shape)
    if hasattr(model.backbone, 'switch_to_deploy'):
        switch_to_deploy(model)
        forms['deploy'] = measure(model, cfg, scope, args, device, shape)
    elif args.deploy:
        raise SystemExit(f'error: {cfg.filename}: --deploy: model.backbone is {type(model.backbone).__name__}, '
                         'which has no deploy form (only RepLKNet backbones can be re-parameterised)')
    backbone_cfg = cfg.model.backbone
    return dict(
        config=cfg.filename, backbone=backbone_cfg.type, device=device.type,
        device_name=torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu',
        torch=torch.__version__, threads=torch.get_num_threads(), cudnn_benchmark=device.type == 'cuda',
        dtype=f'{args.amp_dtype} autocast' if args.amp else 'float32', memory_format='NCHW',
        batch_size=args.batch_size, shape=list(shape), warmup=args.warmup, repeats=args.repeats,
        dwconv_impl=(os.environ.get('REPLK_DWCONV_IMPL') or backbone_cfg.get('dwconv_impl', 'auto')
                     if backbone_cfg.type in ('RepLKNet', 'replk_mm.RepLKNet') else None),
        forms=forms)


def print_table(results, args):
    first = results[0]
    print(f'batch {first["batch_size"]}, {first["device_name"]}, {first["dtype"]}, median of {args.repeats} after '
          f'{args.warmup} warm-up; ratios against the first config\'s training form')
    reference = first['forms'].get('training') or first['forms']['deploy']
    print(f'{"config":<48} {"form":<9} {"HxW":>9} {"infer img/s":>12} {"x ref":>6} {"train ms":>9} {"x ref":>6}'
          f' {"train MiB":>10}')
    for result in results:
        name = osp.splitext(osp.basename(result['config']))[0][:48]
        for form, r in result['forms'].items():
            print(f'{name:<48} {form:<9} {"x".join(map(str, result["shape"])):>9} '
                  f'{r["inference_images_per_s"]:>12.2f} '
                  f'{r["inference_images_per_s"] / reference["inference_images_per_s"]:>6.2f} '
                  f'{r["train_step_ms"]:>9.1f} {r["train_step_ms"] / reference["train_step_ms"]:>6.2f} '
                  f'{r["train_peak_memory_mib"] or 0:>10.0f}')
            if 'phases_ms' in r:
                print('    phases (ms): ' + ', '.join(f'{k} {v:.1f}' for k, v in r['phases_ms'].items()))


def main():
    args = parse_args()
    MMLogger.get_instance('benchmark', log_level='WARNING')  # quiet the optimizer's per-parameter INFO lines
    results = [run(load_run_config(config, args.cfg_options), args) for config in args.configs]
    print_table(results, args)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)


if __name__ == '__main__':
    main()
