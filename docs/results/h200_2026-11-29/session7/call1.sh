#!/usr/bin/env bash
# nvidia-h200-x4: mmcv built; UperNet-31B DDP on 1, 2, 4 GPUs with the backbone's CUDA graphs (SyncBN captured
# across processes); GPU tests of CUDA graphs and SyncBN (2-GPU ones included).
source .whl/common.sh
nvidia-smi topo -m > $R/topo.txt 2>&1
ddp ddp_graphs 470 1 2 4 -- model.backbone.cuda_graph=True
timeout $(left 590) python3 -m pytest -q -p no:cacheprovider tests/models/test_cuda_graph.py tests/models/test_sync_bn.py -rs --durations=8 > "$R/pytest_graph_syncbn.log" 2>&1
echo "pytest rc=$? at $(( $(date +%s) - T0 )) s"; tail -15 "$R/pytest_graph_syncbn.log" | cut -c1-300
