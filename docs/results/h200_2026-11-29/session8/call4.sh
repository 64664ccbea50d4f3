#!/usr/bin/env bash
# Cascade bf16 with RepLKNet-31B first (order check); UperNet-31B Cityscapes 769 crop: memory with graphs vs with_cp.
source .whl/common.sh
tar -C ~ -xJf .whl/triton_cache.tar.xz
timeout $(left 190) python3 tools/benchmark.py configs/cascade_mask_rcnn_replknet31b_coco.py configs/benchmarks/cascade_mask_rcnn_swin_b_coco.py --amp --amp-dtype bfloat16 --phases --fixed-proposals --sizes multi-scale --batch-size 2 --warmup 3 --repeats 24 --out $R/cascade_bf16_replknet_first.json > $R/cascade_bf16_replknet_first.log 2>&1
echo "cascade rc=$? at $(( $(date +%s) - T0 )) s"; grep -v -i warn $R/cascade_bf16_replknet_first.log | tail -12
C=configs/upernet_replknet31b_cityscapes.py
timeout $(left 275) python3 tools/benchmark.py $C@model.backbone.with_cp=False@model.backbone.cuda_graph=True $C@model.backbone.with_cp=False $C --shape 769 769 --amp --batch-size 2 --warmup 3 --repeats 10 --out $R/upernet_cityscapes_memory.json > $R/upernet_cityscapes_memory.log 2>&1
echo "cityscapes rc=$? at $(( $(date +%s) - T0 )) s"; grep -v -i warn $R/upernet_cityscapes_memory.log | tail -8
