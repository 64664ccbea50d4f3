"""tools/dist_run.sh: torchrun with --launcher pytorch, one process with the same thread setting as several."""
import json
import os
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT, free_port

REPORT = '''import json, os, sys
with open(os.environ['REPORT_TO'], 'w') as f:
    json.dump(dict(omp=os.environ.get('OMP_NUM_THREADS'), argv=sys.argv[1:], world=os.environ['WORLD_SIZE']), f)
'''


@pytest.mark.parametrize('omp, expected', [(None, '1'), ('3', '3')])
def test_one_process_gets_one_thread_unless_told(tmp_path, omp, expected):
    """torchrun sets OMP_NUM_THREADS=1 only for 2+ processes; one process without it waited for its data loader
    most of each iteration on a 64-core host (docs/benchmarks.md). A value the user sets is kept."""
    script, report = tmp_path / 'report.py', tmp_path / 'report.json'
    script.write_text(REPORT)
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    env.update(PYTHON=sys.executable, PORT=str(free_port()), REPORT_TO=str(report))
    if omp:
        env['OMP_NUM_THREADS'] = omp
    result = subprocess.run(['bash', 'tools/dist_run.sh', '1', str(script), '--flag'], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(report.read_text()) == dict(omp=expected, argv=['--flag', '--launcher', 'pytorch'], world='1')
