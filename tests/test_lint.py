"""The code base and the configs pass the lint settings (ruff.toml: pycodestyle, pyflakes, import order)."""
import shutil
import subprocess

import pytest

from conftest import PROJECT_ROOT


def test_ruff_finds_nothing():
    ruff = shutil.which('ruff')
    if ruff is None:
        pytest.fail('ruff is not installed: pip install -e ".[tests]"')
    result = subprocess.run([ruff, 'check', 'replk_mm', 'tools', 'tests', 'configs', 'setup.py'], cwd=PROJECT_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
