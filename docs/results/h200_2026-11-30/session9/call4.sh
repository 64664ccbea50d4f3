#!/usr/bin/env bash
# Issue 13: the five shapes with the batched host measure; where the eager host time goes (cProfile, parts alone).
source .whl/common.sh
[ -f .whl/triton_cache.tar.xz ] && tar -C ~ -xJf .whl/triton_cache.tar.xz
timeout $(left 200) python3 tools/benchmark_dwconv.py --dtypes fp32 bf16 --out $R/dwconv_run9.json > $R/dwconv_run9.log 2>&1
echo "dwconv rc=$? at $(( $(date +%s) - T0 )) s"; grep -E "^\| [0-9]|geometric" $R/dwconv_run9.log | tail -12
timeout $(left 300) python3 .whl/host_probe2.py $R/host_probe2.json > $R/host_probe2.log 2>&1
echo "probe rc=$? at $(( $(date +%s) - T0 )) s"; grep -E "^torch\.(float32|bfloat16)" $R/host_probe2.log
