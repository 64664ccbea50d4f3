#!/usr/bin/env bash
# Cascade interleaved, RepLKNet-31B first (order check of the interleaved verdict); packs the Triton cache.
source .whl/common.sh
[ -f .whl/triton_cache.tar.xz ] && tar -C ~ -xJf .whl/triton_cache.tar.xz
for d in bfloat16 float16; do
  [ $d = bfloat16 ] && t=290 || t=570
  timeout $(left $t) python3 tools/benchmark.py configs/cascade_mask_rcnn_replknet31b_coco.py configs/benchmarks/cascade_mask_rcnn_swin_b_coco.py --interleave --amp --amp-dtype $d --phases --fixed-proposals --sizes multi-scale --batch-size 2 --warmup 3 --repeats 24 --out $R/cascade_interleaved_replknet_first_$d.json > $R/cascade_interleaved_replknet_first_$d.log 2>&1
  echo "cascade $d rc=$? at $(( $(date +%s) - T0 )) s"; grep -v -i warn $R/cascade_interleaved_replknet_first_$d.log | tail -14
done
tar -C ~ -cJf $OUT/triton_cache.tar.xz .triton 2>/dev/null; ls -la $OUT
