"""``python -m replk_mm.ops.compile_worker JOBS.json``: one of the processes that
:func:`replk_mm.ops.triton_dwconv.compile_in_workers` starts. It compiles the launch plans listed in
the file (:meth:`~replk_mm.ops.triton_dwconv._Launch.job`) into Triton's on-disk cache, where the
process that started it then finds them.
"""
import json
import sys

from replk_mm.ops import triton_dwconv

if __name__ == '__main__':
    with open(sys.argv[1]) as f:
        for job in json.load(f):
            triton_dwconv.compile_job(job)
