#!/usr/bin/env bash
# Next session, first call (any kind): Cascade interleaved against Swin-B (issue 15's bf16 verdict); UperNet side by side.
source .whl/common.sh
[ -f .whl/triton_cache.tar.xz ] && tar -C ~ -xJf .whl/triton_cache.tar.xz
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/models/test_cuda_graph.py -k drop_path > $R/gpu_drop_path_tests.log 2>&1; echo "drop-path tests rc=$?"; tail -3 $R/gpu_drop_path_tests.log
timeout $(left 330) python3 tools/benchmark.py configs/benchmarks/cascade_mask_rcnn_swin_b_coco.py configs/cascade_mask_rcnn_replknet31b_coco.py --interleave --amp --amp-dtype bfloat16 float16 --phases --fixed-proposals --sizes multi-scale --batch-size 2 --warmup 3 --repeats 24 --out $R/cascade_interleaved.json > $R/cascade_interleaved.log 2>&1
echo "cascade rc=$? at $(( $(date +%s) - T0 )) s"; grep -v -i warn $R/cascade_interleaved.log | tail -14
timeout $(left 560) python3 tools/benchmark.py configs/upernet_replknet31b_ade20k.py mmseg::swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py --interleave --amp --phases --batch-size 2 --warmup 5 --repeats 30 --out $R/upernet_interleaved_b2.json > $R/upernet_interleaved_b2.log 2>&1
echo "upernet rc=$? at $(( $(date +%s) - T0 )) s"; grep -v -i warn $R/upernet_interleaved_b2.log | tail -10
