"""Shared test helpers: the official key lists, a tiny RepLKNet arch that keeps large kernels, two-GPU runs."""
import datetime
import importlib.util
import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.modules.batchnorm import _BatchNorm

from replk_mm.numerics import relative_error  # noqa: F401  (the tests' error measure, re-exported)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The official release's state-dict keys and shapes (31B training/deploy form, XL training form), tracked here.
REFERENCE_DIR = PROJECT_ROOT / 'tests' / 'data' / 'reference'

# Four stages as in 31B, large kernels kept, few channels and blocks: fast on a CPU.
TINY_ARCH = dict(large_kernel_sizes=[13, 11, 9, 7], layers=[1, 1, 2, 1], channels=[8, 16, 24, 32],
                 small_kernel=5, dw_ratio=1)


@pytest.fixture
def reference_dir():
    return REFERENCE_DIR


def read_key_list(path):
    """A tsv of ``key<TAB>(shape)`` lines -> {key: shape tuple}."""
    keys = {}
    for line in Path(path).read_text().splitlines():
        key, shape = line.split('\t')
        keys[key] = tuple(int(d) for d in shape.strip('()').split(',') if d.strip())
    return keys


def randomize_bn_stats(model, seed=0):
    """Non-trivial BN statistics and affine params, so that merging and loading are really tested."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(channels, generator=generator) * 0.1)
    return model


def load_tool(name):
    """A script under tools/ as a module, to call its main() in-process."""
    spec = importlib.util.spec_from_file_location(f'tools_{name}', PROJECT_ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(monkeypatch, tool, *args):
    """Run tools/TOOL.py's main() with ``args`` as its command line."""
    monkeypatch.setattr(sys, 'argv', [f'{tool}.py', *map(str, args)])
    load_tool(tool).main()


def _two_gpu_process(rank, port, out_dir, report_fn):
    """One process of :func:`run_on_two_gpus`: NCCL on cuda:``rank``, then ``report_fn(rank)`` written as JSON."""
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group('nccl', rank=rank, world_size=2, device_id=torch.device('cuda', rank),
                            timeout=datetime.timedelta(seconds=60))
    try:
        report = report_fn(rank)
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(report, f)


def free_port():
    """A TCP port free on this machine now, for a process group's rendezvous."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_on_two_gpus(report_fn, tmp_path):
    """``report_fn(rank)`` (a module-level function returning JSON-able data) in two spawned processes joined by
    NCCL, one GPU each; their reports by rank."""
    mp.start_processes(_two_gpu_process, args=(free_port(), str(tmp_path), report_fn), nprocs=2,
                       start_method='spawn')
    return [json.loads((tmp_path / f'rank{rank}.json').read_text()) for rank in (0, 1)]
