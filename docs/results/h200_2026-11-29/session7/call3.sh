#!/usr/bin/env bash
# nvidia-h200-x4: UperNet-31B DDP eager on 1, 2, 4 GPUs with OMP_NUM_THREADS=1 in every run (torchrun sets it only for
# 2+ processes); then which part of a DDP run breaks the backbone's CUDA-graph capture.
source .whl/common.sh
export OMP_NUM_THREADS=1
ddp ddp_eager_omp1 250 1 2 4
for v in "plain global" "pg global" "ddp global" "ddp thread_local" "ddp relaxed" "ddp_nodrop global"; do
  timeout $(left 440) python3 .whl/diag_graph.py $v > "$R/diag_${v// /_}.log" 2>&1; grep -h -E "PASS|FAIL" "$R/diag_${v// /_}.log" || echo "$v: rc=$? no verdict"
done
echo "done at $(( $(date +%s) - T0 )) s"
