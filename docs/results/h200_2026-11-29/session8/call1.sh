#!/usr/bin/env bash
# nvidia-h200-x2: GPU tests of the CUDA-graph path under DDP, then UperNet-31B DDP eager vs graphs on 1 and 2 GPUs.
source .whl/common.sh
export OMP_NUM_THREADS=1
nvidia-smi topo -m > $R/topo.txt 2>&1
timeout $(left 230) python3 -m pytest -q -p no:cacheprovider --durations=8 tests/models/test_cuda_graph.py tests/models/test_sync_bn.py > $R/pytest_graph_syncbn_gpu.log 2>&1
echo "pytest rc=$? at $(( $(date +%s) - T0 )) s"; tail -4 $R/pytest_graph_syncbn_gpu.log
ddp graphs 380 1 2 -- model.backbone.cuda_graph=True
ddp eager 470 1 2
ddp graphs_bucketview 560 1 2 -- model.backbone.cuda_graph=True model_wrapper_cfg.gradient_as_bucket_view=True model_wrapper_cfg.broadcast_buffers=False
echo "done at $(( $(date +%s) - T0 )) s"
