"""mmengine's autocast under torch.compile: what ``compile=True`` with ``--amp`` traces in ``train_step``."""
import torch
from mmengine.runner.amp import autocast
from mmengine.utils import version_utils

import replk_mm  # noqa: F401  (replaces autocast's version check)


def test_mmengine_autocast_compiles_without_tracing_its_version_check(monkeypatch):
    """Parsing a version while tracing (which failed on torch 2.11) is made to break the graph: with
    ``fullgraph=True`` the compile then fails unless the traced check only looks versions up."""
    real_parse = version_utils.parse

    def graph_breaking_parse(version):
        torch._dynamo.graph_break()
        return real_parse(version)

    monkeypatch.setattr(version_utils, 'parse', graph_breaking_parse)
    torch._dynamo.reset()

    def matmul_under_amp(x):
        with autocast(device_type='cpu', dtype=torch.bfloat16):
            return x @ x

    x = torch.arange(16.0).reshape(4, 4) / 16
    y = torch.compile(matmul_under_amp, fullgraph=True, backend='eager')(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), x @ x, rtol=1e-2, atol=1e-2)
