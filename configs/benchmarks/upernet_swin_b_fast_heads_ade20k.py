# Peer for tools/benchmark.py: mmseg's own UperNet-Swin-B (ADE20K, 512x512) with the generic speed-ups of our
# UperNet configs applied: FastUPerHead/FastFCNHead (same losses and gradients as UPerHead/FCNHead) and AdamW
# over merged parameter groups. Beside mmseg's unchanged config it shows how much of our step's gain is the
# backbone's. Random init: no pretrained file is loaded (the benchmark measures speed and memory only).
_base_ = ['mmseg::swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['replk_mm', 'replk_mm.models.heads'], allow_failed_imports=False)
model = dict(backbone=dict(init_cfg=None), decode_head=dict(type='FastUPerHead'),
             auxiliary_head=dict(type='FastFCNHead'))
optim_wrapper = dict(constructor='MergedGroupsOptimWrapperConstructor')
