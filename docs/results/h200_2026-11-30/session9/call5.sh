#!/usr/bin/env bash
# Issue 13: where the eager fwd+bwd's host time goes beyond its parts.
source .whl/common.sh
[ -f .whl/triton_cache.tar.xz ] && tar -C ~ -xJf .whl/triton_cache.tar.xz
timeout $(left 150) python3 .whl/host_probe3.py $R/host_probe3.json > $R/host_probe3.log 2>&1
echo "probe rc=$? at $(( $(date +%s) - T0 )) s"; grep -v -i warn $R/host_probe3.log | cut -c1-200 | head -70
