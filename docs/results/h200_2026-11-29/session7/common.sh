# Sourced by each device call: environment, installs (wheels, mmcv built once and sent back), results packing.
set -u
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
left() { local l=$(( $1 - ($(date +%s) - T0) )); [ $l -lt 10 ] && l=10; echo $l; }
R=/tmp/res; rm -rf $R; mkdir -p $R
pack() { tar -C /tmp -cJf "$OUT/results.tar.xz" res; }
trap pack EXIT
python3 -m pip install -q --no-index --no-deps --no-compile .whl/wheels/*.whl 2>&1 | tail -2
mkdir -p /tmp/bin; command -v python >/dev/null || ln -sf "$(command -v python3)" /tmp/bin/python; export PATH=/tmp/bin:$PATH
if ! python3 -c 'import mmcv._ext' 2>/dev/null; then
  if ls .whl/mmcvwheel/mmcv.whl.xz.* >/dev/null 2>&1; then
    cat .whl/mmcvwheel/mmcv.whl.xz.* | xz -d > /tmp/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl
    python3 -m pip install -q --no-index --no-deps /tmp/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl 2>&1 | tail -2
  else
    b0=$(date +%s)
    MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=$(nproc) python3 -m pip wheel -q --no-build-isolation --no-deps -w /tmp/mmcvw .whl/mmcv/mmcv-2.1.0.tar.gz > $R/mmcv_build.log 2>&1
    echo "mmcv CUDA build rc=$? in $(( $(date +%s) - b0 )) s on $(nproc) cores" | tee -a $R/mmcv_build.log
    python3 -m pip install -q --no-index --no-deps /tmp/mmcvw/mmcv-*.whl 2>&1 | tail -2
    xz -T0 -6 -c /tmp/mmcvw/mmcv-*.whl | split -b 15M - "$OUT/mmcv.whl.xz."
  fi
fi
export PYTHONPATH=$PWD
python3 -c 'import mmcv._ext, mmseg, mmdet, torch; print("stack ok", torch.__version__, torch.cuda.device_count(), "GPUs")'
echo "setup at $(( $(date +%s) - T0 )) s; $(nproc) cores"
python3 -c "from replk_mm.data import make_ade20k; make_ade20k('/tmp/ade', num_train=96, num_val=2, size=(512, 683), num_classes=150)"
D="train_dataloader.dataset.data_root=/tmp/ade val_dataloader.dataset.data_root=/tmp/ade test_dataloader.dataset.data_root=/tmp/ade"
ddp() {  # name, deadline (s since start), gpus..., then -- and extra cfg-options
  local name=$1 t=$2; shift 2; local g=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do g+=("$1"); shift; done; [ $# -gt 0 ] && shift
  timeout $(left $t) python3 tools/benchmark_ddp.py configs/upernet_replknet31b_ade20k.py --gpus "${g[@]}" --iters 40 --skip 10 --batch-size 2 --workers 8 --amp-dtype bfloat16 --work-dir /tmp/$name --out "$R/$name.json" --cfg-options model.backbone.init_cfg=None $D "$@" > "$R/$name.log" 2>&1
  echo "$name rc=$? at $(( $(date +%s) - T0 )) s"; grep -E "^\| [0-9]" "$R/$name.log"; grep -m3 -E "Error|error:" "$R/$name.log" | cut -c1-300
  for n in "${g[@]}"; do f=$(ls /tmp/$name/gpus$n/*/vis_data/scalars.json 2>/dev/null | tail -1); [ -n "$f" ] && cp "$f" "$R/${name}_gpus${n}_scalars.json"
    l=$(ls /tmp/$name/gpus$n/*/*.log 2>/dev/null | tail -1); [ -n "$l" ] && grep -v Warn "$l" | tail -c 80000 > "$R/${name}_gpus${n}_run.log"; done
}
