"""Shared test helpers: the reference files and a tiny RepLKNet arch that keeps large kernels."""
import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get('REPLK_REFERENCE_DIR', PROJECT_ROOT.parent / 'shared' / 'reference'))

# Four stages as in 31B, large kernels kept, few channels and blocks: fast on a CPU.
TINY_ARCH = dict(large_kernel_sizes=[13, 11, 9, 7], layers=[1, 1, 2, 1], channels=[8, 16, 24, 32],
                 small_kernel=5, dw_ratio=1)


@pytest.fixture
def reference_dir():
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f'reference files not found at {REFERENCE_DIR}')
    return REFERENCE_DIR


def read_key_list(path):
    """A tsv of ``key<TAB>(shape)`` lines -> {key: shape tuple}."""
    keys = {}
    for line in Path(path).read_text().splitlines():
        key, shape = line.split('\t')
        keys[key] = tuple(int(d) for d in shape.strip('()').split(',') if d.strip())
    return keys
