#!/usr/bin/env bash
# Next session, call 1 (fresh nvidia-h200; carry .whl/wheels .whl/mmcvwheel .whl/src .whl/next_session.sh
# .whl/cold_start_probe.py .whl/profile_backbone.py .whl/host_probe.py; refresh .whl/src from HEAD first):
# cold start with row_block's extra classes; dwconv run 8 (row_block default, fp32 weights) at the five and the
# detection shapes; Cascade bf16 and fp16, Swin-B first; the full-size backbone profile.
set -u
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
T0=$(date +%s)
left() { local l=$(( $1 - ($(date +%s) - T0) )); [ $l -lt 10 ] && l=10; echo $l; }
python3 -m pip install -q --no-index --no-deps --no-compile .whl/wheels/*.whl 2>&1 | tail -2
cat .whl/mmcvwheel/mmcv.whl.xz.* | xz -d > /tmp/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl
python3 -m pip install -q --no-index --no-deps /tmp/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl 2>&1 | tail -2
R=$PWD; cd .whl/src && export PYTHONPATH=$PWD
echo "setup at $(( $(date +%s) - T0 )) s; cache files $(ls ~/.triton/cache 2>/dev/null | wc -l)"
timeout 150 python3 $R/.whl/cold_start_probe.py > "$OUT/cold_start_probe.log" 2>&1
echo "cold start rc=$? at $(( $(date +%s) - T0 )) s"; grep -E "first_step_s|plans|worker_seconds" "$OUT/cold_start_probe.log"
timeout $(left 230) python3 $R/.whl/profile_backbone.py > "$OUT/profile_backbone.log" 2>&1
echo "profile rc=$? at $(( $(date +%s) - T0 )) s"; grep -E "^==" "$OUT/profile_backbone.log"
for D in bfloat16 float16; do
  timeout $(left $([ $D = bfloat16 ] && echo 370 || echo 500)) python3 tools/benchmark.py configs/benchmarks/cascade_mask_rcnn_swin_b_coco.py configs/cascade_mask_rcnn_replknet31b_coco.py --amp --amp-dtype $D --phases --fixed-proposals --sizes multi-scale --batch-size 2 --warmup 3 --repeats 8 --out "$OUT/cascade_b2_$D.json" > "$OUT/cascade_b2_$D.log" 2>&1
  echo "cascade $D rc=$? at $(( $(date +%s) - T0 )) s"; grep -v Warn "$OUT/cascade_b2_$D.log" | tail -5
done
timeout 60 python3 $R/.whl/host_probe.py "$OUT/host_probe.json" > "$OUT/host_probe.log" 2>&1
echo "host probe rc=$? at $(( $(date +%s) - T0 )) s"; grep "^(" "$OUT/host_probe.log"
timeout $(left 590) python3 tools/benchmark_dwconv.py --shapes detection 64,128,56,56,31 64,256,28,28,29 64,512,14,14,27 64,1024,7,7,13 8,128,128,128,31 --dtypes bf16 fp32 --out "$OUT/dwconv_run8.json" > "$OUT/dwconv_run8.log" 2>&1
echo "dwconv rc=$? at $(( $(date +%s) - T0 )) s"; grep -E "^\| [0-9]|geometric" "$OUT/dwconv_run8.log" | tail -28
