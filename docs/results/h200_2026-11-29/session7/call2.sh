#!/usr/bin/env bash
# nvidia-h200-x4: UperNet-31B DDP on 1, 2, 4 GPUs, backbone CUDA graphs (SyncBN captured) against eager.
source .whl/common.sh
ddp ddp_graphs 330 1 2 4 -- model.backbone.cuda_graph=True
ddp ddp_eager 590 1 2 4
