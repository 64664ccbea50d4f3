#!/usr/bin/env bash
# Next session, first call, on nvidia-h200-x4 (else x2): carry .whl/wheels .whl/mmcvwheel .whl/src .whl/next_ddp.sh
# .whl/nccl_probe.py .whl/cold_start_probe.py. Cold start of an empty Triton cache, batch by batch; NCCL transport and latency; the 2-GPU SyncBN test; UperNet-31B DDP scaling 1/2/4 with
# --profile; the same at 2 GPUs with PyTorch's SyncBN (A/B on one machine).
set -u
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
left() { local l=$(( $1 - ($(date +%s) - T0) )); [ $l -lt 10 ] && l=10; echo $l; }
NG=$(python3 -c 'import torch; print(torch.cuda.device_count())')
python3 -m pip install -q --no-index --no-deps --no-compile .whl/wheels/*.whl 2>&1 | tail -2
cat .whl/mmcvwheel/mmcv.whl.xz.* | xz -d > /tmp/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl
python3 -m pip install -q --no-index --no-deps /tmp/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl 2>&1 | tail -2
mkdir -p /tmp/bin; command -v python >/dev/null || ln -sf "$(command -v python3)" /tmp/bin/python; export PATH=/tmp/bin:$PATH
R=$PWD; cd .whl/src && export PYTHONPATH=$PWD
echo "setup at $(( $(date +%s) - T0 )) s; $NG GPUs; $(nproc) cores"; nvidia-smi topo -m > "$OUT/topo.txt" 2>&1
python3 -c "from replk_mm.data import make_ade20k; make_ade20k('/tmp/ade', num_train=96, num_val=2, size=(512, 683), num_classes=150)" &
timeout 240 python3 $R/.whl/cold_start_probe.py > "$OUT/cold_start_probe.log" 2>&1
echo "cold start rc=$? at $(( $(date +%s) - T0 )) s"; grep -v Warn "$OUT/cold_start_probe.log" | tail -30
NCCL_DEBUG=INFO timeout 60 torchrun --nproc_per_node=$NG $R/.whl/nccl_probe.py > "$OUT/nccl_probe.log" 2>&1
echo "nccl rc=$?"; grep -E "^world|via|Channel 00" "$OUT/nccl_probe.log" | sort | uniq | head -8
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/models/test_sync_bn.py -rs > "$OUT/pytest_sync_bn.log" 2>&1
echo "pytest sync_bn rc=$? at $(( $(date +%s) - T0 )) s"; tail -2 "$OUT/pytest_sync_bn.log"; wait
D="train_dataloader.dataset.data_root=/tmp/ade val_dataloader.dataset.data_root=/tmp/ade test_dataloader.dataset.data_root=/tmp/ade"
run() {  # name, deadline, gpus..., then -- and extra cfg-options
  local name=$1 t=$2; shift 2; local g=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do g+=("$1"); shift; done; [ $# -gt 0 ] && shift
  timeout $(left $t) python3 tools/benchmark_ddp.py configs/upernet_replknet31b_ade20k.py --gpus "${g[@]}" --iters 50 --skip 10 --batch-size 2 --workers 8 --amp-dtype bfloat16 --profile --work-dir /tmp/$name --out "$OUT/$name.json" --cfg-options model.backbone.init_cfg=None $D "$@" > "$OUT/$name.log" 2>&1
  echo "$name rc=$? at $(( $(date +%s) - T0 )) s"; grep -E "^\| [0-9]" "$OUT/$name.log"; grep -m2 -E "Error|error:" "$OUT/$name.log"
  for n in "${g[@]}"; do f=$(ls /tmp/$name/gpus$n/*/vis_data/scalars.json 2>/dev/null | tail -1); [ -n "$f" ] && cp "$f" "$OUT/${name}_gpus${n}_scalars.json"; done
}
run ddp_scaling 400 $NG 1 2
run ddp_torch_syncbn 560 2 -- model.backbone.norm_cfg.type=SyncBN model.decode_head.norm_cfg.type=SyncBN model.auxiliary_head.norm_cfg.type=SyncBN
