"""Inference throughput and training-step time of a config's model, in training and deploy form.

Inference: the network forward (``mode='tensor'``: backbone, neck, heads; no post-processing) in eval
mode under no_grad. Training step: forward with loss, backward and the config's optimizer step, on
synthetic inputs and labels fed straight to the model (no dataloader). Each is warmed up, then timed
once per repeat, and the median is reported: CUDA events with a synchronisation per repeat on GPU,
time.perf_counter on CPU. ``--amp`` runs both under bf16 autocast (no loss scaling needed). Inputs are
NCHW; cudnn.benchmark is on. Without ``--deploy`` the training form is measured first, then the same
model with its large kernels merged; with ``--deploy`` only the merged form.
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

import replk_mm  # noqa: F401  (registers RepLKNet)
from replk_mm.apis import load_run_config
from replk_mm.deploy import build_model, config_scope, switch_to_deploy, synthetic_data_samples

DEFAULT_SHAPES = {'mmseg': (512, 512), 'mmdet': (800, 1280)}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: 512 512 segmentation, 800 1280 detection)')
    parser.add_argument('--batch-size', type=int, default=2,
                        help="images per step (default: 2; UperNet's training needs 2: its 1x1 pooled branch "
                             'has a BN)')
    parser.add_argument('--device', choices=['cuda', 'cpu'], help='default: cuda if available')
    parser.add_argument('--amp', action='store_true', help='bf16 autocast for inference and training')
    parser.add_argument('--deploy', action='store_true', help='measure the deploy (merged) form only')
    parser.add_argument('--warmup', type=int, default=5, help='untimed calls before timing (default: 5)')
    parser.add_argument('--repeats', type=int, default=20, help='timed calls; the median is reported (default: 20)')
    parser.add_argument('--out', help='write the results as JSON to this file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    args = parser.parse_args()
    for name in ('batch_size', 'repeats'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1')
    if args.warmup < 0:
        parser.error('--warmup must not be negative')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available')
    return args


def time_call(fn, device, warmup, repeats):
    """Seconds per call of ``fn`` (all repeats), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times


def peak_memory_mib(device):
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else None


def reset_peak_memory(device):
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def measure(model, cfg, scope, args, device, shape):
    """{inference and training-step medians, all times, peak memory} of ``model`` in its current form."""
    batch = args.batch_size
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.amp else contextlib.nullcontext
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
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    optim_cfg['type'] = 'OptimWrapper'  # precision is --amp's business, not the config's AmpOptimWrapper
    for key in ('loss_scale', 'dtype'):
        optim_cfg.pop(key, None)
    optim_wrapper = build_optim_wrapper(model, optim_cfg)

    def train_step():
        with autocast():
            losses = model(inputs, labelled, mode='loss')
        loss, _ = model.parse_losses(losses)
        optim_wrapper.update_params(loss)

    model.train()
    reset_peak_memory(device)
    train_times = time_call(train_step, device, args.warmup, args.repeats)
    train_memory = peak_memory_mib(device)
    infer_s, train_s = statistics.median(infer_times), statistics.median(train_times)
    return dict(inference_images_per_s=batch / infer_s, inference_ms=infer_s * 1e3,
                train_step_ms=train_s * 1e3, train_images_per_s=batch / train_s,
                inference_times_ms=[t * 1e3 for t in infer_times], train_step_times_ms=[t * 1e3 for t in train_times],
                inference_peak_memory_mib=infer_memory, train_peak_memory_mib=train_memory)


def run(cfg, args):
    scope = config_scope(cfg)
    shape = tuple(args.shape or DEFAULT_SHAPES[scope])
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    model = build_model(cfg).to(device)
    forms = {}
    if not args.deploy:
        forms['training'] = measure(model, cfg, scope, args, device, shape)
    switch_to_deploy(model)
    forms['deploy'] = measure(model, cfg, scope, args, device, shape)
    return dict(
        config=cfg.filename, device=device.type,
        device_name=torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu',
        torch=torch.__version__, threads=torch.get_num_threads(), cudnn_benchmark=device.type == 'cuda',
        dtype='bfloat16 autocast' if args.amp else 'float32', memory_format='NCHW', batch_size=args.batch_size,
        shape=list(shape), warmup=args.warmup, repeats=args.repeats,
        dwconv_impl=os.environ.get('REPLK_DWCONV_IMPL') or cfg.model.backbone.get('dwconv_impl', 'auto'),
        forms=forms)


def main():
    args = parse_args()
    MMLogger.get_instance('benchmark', log_level='WARNING')  # quiet the optimizer's per-parameter INFO lines
    cfg = load_run_config(args.config, args.cfg_options)
    result = run(cfg, args)
    print(f'{args.config}: batch {result["batch_size"]} x {"x".join(map(str, result["shape"]))} (HxW), '
          f'{result["device_name"]}, {result["dtype"]}, median of {args.repeats} after {args.warmup} warm-up')
    print(f'{"form":<9} {"inference img/s":>16} {"inference ms":>13} {"train step ms":>14} {"train img/s":>12}')
    for form, r in result['forms'].items():
        print(f'{form:<9} {r["inference_images_per_s"]:>16.2f} {r["inference_ms"]:>13.1f} '
              f'{r["train_step_ms"]:>14.1f} {r["train_images_per_s"]:>12.2f}')
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
