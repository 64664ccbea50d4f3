#!/usr/bin/env bash
# Cascade Mask R-CNN: RepLKNet-31B against Swin-B, bf16 and fp16, 24 repeats, phase sums and allocator counts (issue 15).
source .whl/common.sh
tar -C ~ -xJf .whl/triton_cache.tar.xz
timeout $(left 560) python3 tools/benchmark.py configs/benchmarks/cascade_mask_rcnn_swin_b_coco.py configs/cascade_mask_rcnn_replknet31b_coco.py --amp --amp-dtype bfloat16 float16 --phases --fixed-proposals --sizes multi-scale --batch-size 2 --warmup 3 --repeats 24 --out $R/cascade_bf16_fp16.json > $R/cascade_bf16_fp16.log 2>&1
echo "cascade rc=$? at $(( $(date +%s) - T0 )) s"; grep -v -i warn $R/cascade_bf16_fp16.log | tail -40
