#!/usr/bin/env bash
# Usage: tools/dist_run.sh NGPUS SCRIPT [args...]: SCRIPT (a tools/*.py) on NGPUS processes per node with torchrun
# and --launcher pytorch. Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT; PYTHON picks the interpreter.
GPUS=$1
SCRIPT=$2
# torchrun sets OMP_NUM_THREADS=1 for 2+ processes per node only; one process gets it too, so that runs differ only in
# their number of processes. Without it one process on a 64-core H200 host waited for its loader 0.19 s of each
# 0.32 s UperNet iteration, 0.03 s of 0.14 s with it (docs/benchmarks.md, "Several GPUs").
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "${PYTHON:-python}" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --nproc_per_node="$GPUS" --master_port="${PORT:-29500}" \
    "$SCRIPT" "${@:3}" --launcher pytorch
