#!/usr/bin/env bash
# nvidia-h200-x2; carry .whl/wheels .whl/mmcvwheel .whl/src .whl/call_b.sh. UperNet-31B DDP scaling 1/2 GPUs with
# --profile; mmengine compile=True with --amp (tiny UperNet); PyTorch SyncBN A/B at 2 GPUs; the 2-GPU SyncBN test.
set -u
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
left() { local l=$(( $1 - ($(date +%s) - T0) )); [ $l -lt 10 ] && l=10; echo $l; }
python3 -m pip install -q --no-index --no-deps --no-compile .whl/wheels/*.whl 2>&1 | tail -2
cat .whl/mmcvwheel/mmcv.whl.xz.* | xz -d > /tmp/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl
python3 -m pip install -q --no-index --no-deps /tmp/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl 2>&1 | tail -2
mkdir -p /tmp/bin; command -v python >/dev/null || ln -sf "$(command -v python3)" /tmp/bin/python; export PATH=/tmp/bin:$PATH
cd .whl/src && export PYTHONPATH=$PWD
echo "setup at $(( $(date +%s) - T0 )) s; $(nproc) cores"
python3 -c "from replk_mm.data import make_ade20k; make_ade20k('/tmp/ade', num_train=96, num_val=2, size=(512, 683), num_classes=150); make_ade20k('data/synthetic_ade20k', num_classes=8)"
D="train_dataloader.dataset.data_root=/tmp/ade val_dataloader.dataset.data_root=/tmp/ade test_dataloader.dataset.data_root=/tmp/ade"
run() {  # name, deadline, gpus..., then -- and extra cfg-options
  local name=$1 t=$2; shift 2; local g=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do g+=("$1"); shift; done; [ $# -gt 0 ] && shift
  timeout $(left $t) python3 tools/benchmark_ddp.py configs/upernet_replknet31b_ade20k.py --gpus "${g[@]}" --iters 40 --skip 10 --batch-size 2 --workers 8 --amp-dtype bfloat16 --profile --work-dir /tmp/$name --out "$OUT/$name.json" --cfg-options model.backbone.init_cfg=None $D "$@" > "$OUT/$name.log" 2>&1
  echo "$name rc=$? at $(( $(date +%s) - T0 )) s"; grep -E "^\| [0-9]" "$OUT/$name.log"; grep -m2 -E "Error|error:" "$OUT/$name.log"
  for n in "${g[@]}"; do f=$(ls /tmp/$name/gpus$n/*/vis_data/scalars.json 2>/dev/null | tail -1); [ -n "$f" ] && cp "$f" "$OUT/${name}_gpus${n}_scalars.json"
    l=$(ls /tmp/$name/gpus$n/*/*.log 2>/dev/null | tail -1); [ -n "$l" ] && grep -v Warn "$l" | tail -c 60000 > "$OUT/${name}_gpus${n}_run.log"; done
}
run ddp_scaling 260 1 2
for A in "--amp" ""; do
  timeout $(left $([ -n "$A" ] && echo 390 || echo 440)) python3 tools/train.py configs/upernet_replknet_tiny_synthetic_ade20k.py --work-dir /tmp/tc$A $A --cfg-options compile=True train_cfg.max_iters=40 train_cfg.val_interval=1000 default_hooks.logger.interval=10 > "$OUT/train_tiny_compile${A}.log" 2>&1
  echo "compile=True $A rc=$? at $(( $(date +%s) - T0 )) s"; grep -E "Iter\(train\)|Error" "$OUT/train_tiny_compile${A}.log" | cut -c1-220 | tail -4
done
run ddp_torch_syncbn 520 2 -- model.backbone.norm_cfg.type=SyncBN model.decode_head.norm_cfg.type=SyncBN model.auxiliary_head.norm_cfg.type=SyncBN
timeout $(left 590) python3 -m pytest -q -x -p no:cacheprovider tests/models/test_sync_bn.py -rs --durations=5 > "$OUT/pytest_sync_bn.log" 2>&1
echo "pytest sync_bn rc=$? at $(( $(date +%s) - T0 )) s"; tail -12 "$OUT/pytest_sync_bn.log" | cut -c1-300
