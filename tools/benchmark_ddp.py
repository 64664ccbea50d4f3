"""Data-parallel scaling of a training config: the same run on 1, 2, ... GPUs, iteration times from its own log.

Every run, one GPU included, goes through ``tools/dist_train.sh`` (torchrun, NCCL, DDP, SyncBN across the
processes), so that the runs differ only in the number of processes (``dist_run.sh`` sets ``OMP_NUM_THREADS=1`` for
one process as torchrun does for several: without it the one-GPU run on a 64-core H200 host waited for its loader
0.19 s of each 0.32 s iteration; docs/benchmarks.md). Every run keeps the per-GPU batch, loads the config's own dataset
through its own pipeline with ``--workers`` loader processes per GPU, and logs every iteration with a window of one,
so each logged ``time`` is one iteration: loading, the step, DDP's all-reduce and SyncBN included. The first
``--skip`` iterations (compiles, cuDNN's autotuning, loader start-up) are dropped; the median of the rest gives
images/s, and per-GPU efficiency at N GPUs is (images/s at N) / (N x images/s at 1). ``data_time`` (rank 0's wait
for its loader) says whether loading bounds it; ``--profile`` adds mmengine's ProfilerHook over the last three skipped
iterations (none of the timed ones) and prints each rank's table of kernels into the run's log.
The config must be iteration-based (the segmentation configs).

    python tools/benchmark_ddp.py configs/upernet_replknet31b_ade20k.py --gpus 1 2 4 --amp-dtype bfloat16 \\
        --cfg-options model.backbone.init_cfg=None --out ddp.json
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys

import torch
from mmengine.config import Config

TOOLS = osp.dirname(osp.abspath(__file__))


def run_options(iters, batch_size, workers):
    """``--cfg-options`` that make a run time ``iters`` iterations and log each one alone, and nothing else."""
    return [f'train_cfg.max_iters={iters}', f'train_cfg.val_begin={iters + 1}',
            f'train_dataloader.batch_size={batch_size}', f'train_dataloader.num_workers={workers}',
            'default_hooks.logger.interval=1', 'log_processor.window_size=1',
            f'default_hooks.checkpoint.interval={iters + 1}', 'default_hooks.checkpoint.save_last=False']


def profile_options(skip):
    """mmengine's ProfilerHook (CPU and CUDA activity) over iterations skip-2 to skip, a table per rank: within
    the skipped iterations, so that neither the profiler nor its export (seconds) enters the timing."""
    hook = 'default_hooks.profiler'
    return [f'{hook}.type=ProfilerHook', f'{hook}.by_epoch=False', f'{hook}.profile_times={skip}',
            f'{hook}.activity_with_cuda=True', f'{hook}.schedule.wait={skip - 4}', f'{hook}.schedule.warmup=1',
            f'{hook}.schedule.active=3', f'{hook}.on_trace_ready.type=log_trace',
            f'{hook}.on_trace_ready.sort_by=self_cuda_time_total', f'{hook}.on_trace_ready.row_limit=30']


def train_command(config, gpus, work_dir, args):
    command = ['bash', osp.join(TOOLS, 'dist_train.sh'), config, str(gpus), '--work-dir', work_dir]
    if args.amp_dtype:
        command += ['--amp-dtype', args.amp_dtype]
    options = run_options(args.iters, args.batch_size, args.workers)
    if args.profile:
        options += profile_options(args.skip)
    return command + ['--cfg-options', *options, *args.cfg_options]


def logged_iterations(work_dir):
    """The per-iteration rows (``iter``, ``time``, ``data_time``, ...) of the newest run in ``work_dir``."""
    runs = sorted(d for d in os.listdir(work_dir) if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    if not runs:
        raise FileNotFoundError(f'{work_dir}: no */vis_data/scalars.json; the training run logged nothing')
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [row for row in rows if 'iter' in row and 'time' in row]  # training rows (validation has no 'iter')


def summarise(rows, gpus, batch_size, skip):
    """Median iteration time and throughput over the logged iterations after the first ``skip``."""
    timed = [row for row in rows if row['iter'] > skip]
    if not timed:
        raise ValueError(f'{len(rows)} logged iterations, none after the first {skip} (--skip): run more --iters')
    times = [row['time'] for row in timed]
    median = statistics.median(times)
    return dict(gpus=gpus, images_per_gpu=batch_size, iterations_timed=len(timed),
                median_iteration_s=median, mean_iteration_s=statistics.fmean(times), max_iteration_s=max(times),
                median_data_time_s=statistics.median(row['data_time'] for row in timed),
                images_per_s=gpus * batch_size / median, images_per_s_per_gpu=batch_size / median,
                peak_memory_mib=max((row.get('memory', 0) for row in timed), default=0))


def add_efficiency(results):
    """Per-GPU efficiency of each run against the one-GPU run (when one was made)."""
    single = next((r for r in results if r['gpus'] == 1), None)
    for result in results:
        if single is not None:
            result['efficiency'] = result['images_per_s'] / (result['gpus'] * single['images_per_s'])
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--gpus', type=int, nargs='+', default=[1, 2], help='GPU counts to run, one run each')
    parser.add_argument('--iters', type=int, default=60, help='iterations per run')
    parser.add_argument('--skip', type=int, default=10, help='first iterations left out of the timing')
    parser.add_argument('--batch-size', type=int, default=2, help='images per GPU (the configs: 2)')
    parser.add_argument('--workers', type=int, default=8, help='data loader processes per GPU')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'], help='mixed precision (train.py --amp-dtype)')
    parser.add_argument('--work-dir', default='work_dirs/benchmark_ddp', help='runs go to WORK_DIR/gpus<N>')
    parser.add_argument('--cfg-options', nargs='+', default=[], help='key=value settings passed to every run')
    parser.add_argument('--profile', action='store_true', help="torch.profiler tables (each rank's) in the runs' logs")
    parser.add_argument('--out', help='write the results as JSON here')
    args = parser.parse_args()
    if args.skip >= args.iters:
        parser.error(f'--skip ({args.skip}) must be less than --iters ({args.iters})')
    if args.profile and args.skip < 6:
        parser.error(f'--profile records the last three of the skipped iterations, after at least two more: '
                     f'--skip must be at least 6, got {args.skip}')
    if 'max_iters' not in Config.fromfile(args.config, import_custom_modules=False).get('train_cfg', {}):
        parser.error(f'{args.config}: train_cfg has no max_iters; this tool times iteration-based configs')

    results, failed = [], []
    env = dict(os.environ, PYTHON=sys.executable)
    for index, gpus in enumerate(args.gpus):
        work_dir = osp.join(args.work_dir, f'gpus{gpus}')
        command = train_command(args.config, gpus, work_dir, args)
        print('$', ' '.join(command), flush=True)
        env['PORT'] = str(29500 + index)
        completed = subprocess.run(command, env=env)
        if completed.returncode != 0:  # the other GPU counts still run
            failed.append(dict(gpus=gpus, exit_code=completed.returncode, work_dir=work_dir))
            continue
        results.append(summarise(logged_iterations(work_dir), gpus, args.batch_size, args.skip))
    add_efficiency(results)

    print(f'\n{args.config}, {args.batch_size} images per GPU, iterations {args.skip + 1}-{args.iters}')
    print('| GPUs | median s/iter | max s/iter | data_time s | images/s | images/s per GPU | efficiency | memory MiB |')
    print('|---|---|---|---|---|---|---|---|')
    for r in results:
        efficiency = f"{100 * r['efficiency']:.1f}%" if 'efficiency' in r else '-'
        print(f"| {r['gpus']} | {r['median_iteration_s']:.4f} | {r['max_iteration_s']:.4f} | "
              f"{r['median_data_time_s']:.4f} | {r['images_per_s']:.1f} | {r['images_per_s_per_gpu']:.1f} | "
              f"{efficiency} | {r['peak_memory_mib']:.0f} |")
    for run in failed:
        print(f"| {run['gpus']} | failed (exit code {run['exit_code']}; log in {run['work_dir']}) |")
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'
            json.dump(dict(config=args.config, command=sys.argv, device_name=gpu, torch=torch.__version__,
                           cuda=torch.version.cuda, results=results, failed=failed), f, indent=2)
    if failed:
        sys.exit(f"error: the run(s) on {', '.join(str(run['gpus']) for run in failed)} GPU(s) failed")


if __name__ == '__main__':
    main()
