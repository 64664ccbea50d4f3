"""Run the project's tools in subprocesses, as a user would, and read what they print."""
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_tool(args, cwd=PROJECT_ROOT, timeout=600, env=None):
    """Run ``python ARGS`` (a tool path and its arguments); return the CompletedProcess.

    One OpenMP thread unless set: tiny models on 2 shared cores train 3-4x faster that way.
    """
    full_env = dict(os.environ, PYTHONWARNINGS='ignore', **(env or {}))
    full_env.setdefault('OMP_NUM_THREADS', '1')
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def check(result):
    assert result.returncode == 0, (f'exit {result.returncode}\nSTDOUT:\n{result.stdout[-4000:]}\n'
                                    f'STDERR:\n{result.stderr[-4000:]}')
    return result.stdout + result.stderr


def printed_metric(output, name):
    """The value of a ``name: value`` line that tools/test.py prints last."""
    matches = re.findall(rf'^{re.escape(name)}: ([-+0-9.eE]+|nan)$', output, flags=re.MULTILINE)
    assert matches, f'{name} not printed in:\n{output[-3000:]}'
    return float(matches[-1])


def mean_iou_percent(pairs, num_classes, ignore_index):
    """mIoU as mmseg defines it, computed here with numpy from (prediction, ground truth) label-map files.

    Intersections and unions are summed over all images per class; classes with an empty union (absent from
    both) are left out of the mean; the result is rounded to 2 decimals, as mmseg prints it.
    """
    intersect, union = np.zeros(num_classes), np.zeros(num_classes)
    for pred_path, gt_path in pairs:
        pred = cv2.imread(str(pred_path), cv2.IMREAD_UNCHANGED).astype(np.int64)
        gt = cv2.imread(str(gt_path), cv2.IMREAD_UNCHANGED).astype(np.int64)
        valid = gt != ignore_index
        pred, gt = pred[valid], gt[valid]
        intersect += np.bincount(gt[pred == gt], minlength=num_classes)[:num_classes]
        union += (np.bincount(pred, minlength=num_classes)[:num_classes]
                  + np.bincount(gt, minlength=num_classes)[:num_classes])
    union -= intersect
    present = union > 0
    return round(float((intersect[present] / union[present]).mean() * 100), 2)
