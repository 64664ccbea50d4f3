#!/usr/bin/env bash
# nvidia-h200-x2: the shipped config (CUDA graphs by default, label-range hook without unique()) against eager, 1 and 2 GPUs.
source .whl/common.sh
export OMP_NUM_THREADS=1
ddp shipped 250 1 2
ddp eager 420 1 2 -- model.backbone.cuda_graph=False
du -sh ~/.triton/cache; tar -C ~ -cJf $OUT/triton_cache.tar.xz .triton/cache; ls -la $OUT
ddp shipped_bucketview 575 1 2 -- model_wrapper_cfg.gradient_as_bucket_view=True model_wrapper_cfg.broadcast_buffers=False
echo "done at $(( $(date +%s) - T0 )) s"
