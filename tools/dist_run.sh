#!/usr/bin/env bash
# Usage: tools/dist_run.sh NGPUS SCRIPT [args...]: SCRIPT (a tools/*.py) on NGPUS processes per node with torchrun
# and --launcher pytorch. Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT; PYTHON picks the interpreter.
GPUS=$1
SCRIPT=$2
exec "${PYTHON:-python}" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --nproc_per_node="$GPUS" --master_port="${PORT:-29500}" \
    "$SCRIPT" "${@:3}" --launcher pytorch
