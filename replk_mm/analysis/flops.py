"""Parameters and FLOPs of a whole segmentor or detector, counted as the RepLKNet paper's tables count them.

FLOPs are multiply-accumulates (one MAC = one FLOP), as in the paper and mmengine's fvcore-style
:class:`~mmengine.analysis.FlopAnalyzer`: a conv costs N * prod(weight shape) * H_out * W_out, so a
depthwise KxK conv on C channels costs N * C * K * K * H_out * W_out. The analyser also counts BN
(2 per element in eval mode), bilinear resizing (4 per output element) and pooling;
``conv_linear_flops`` counts the convolutions and linear layers alone, which is what the published
numbers count (31B/31L agree with them to 0.1%).

The count traces one forward pass on one random input. A segmentor runs its network forward
(``mode='tensor'``: backbone, neck, decode head); its auxiliary head (training only) is left out of
FLOPs and parameters, as in mmseg's get_flops. A two-stage detector is counted as the paper's
numbers were (mmdet 2.x ``forward_dummy``): backbone, neck, RPN head, the box heads of every stage
on 1000 proposals and the mask heads of every stage on the first 100, so that the count depends
neither on the proposals that NMS keeps nor on mmdet 3's running every mask head on all 1000.
"""
import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count

from replk_mm.apis import build_model, config_scope, random_boxes, synthetic_data_samples
from replk_mm.checkpoint import switch_to_deploy

PAPER_FLOPS_SHAPES = {'mmseg': (512, 2048), 'mmdet': (800, 1280)}  # (H, W): the paper's 2048x512 and 1280x800


class TwoStageForward(nn.Module):
    """A two-stage detector's network on fixed proposals, as mmdet 2.x's ``forward_dummy`` ran it."""

    def __init__(self, model, shape, num_proposals=1000, num_mask_rois=100):
        super().__init__()
        self.model = model
        boxes = random_boxes(num_proposals, shape, torch.Generator().manual_seed(0), min_side=0.05, max_side=0.35)
        self.register_buffer('rois', torch.cat([boxes.new_zeros(num_proposals, 1), boxes], dim=1))
        self.num_mask_rois = num_mask_rois

    def forward(self, inputs):
        x = self.model.extract_feat(inputs)
        outs = [self.model.rpn_head(x)]
        roi_head = self.model.roi_head
        stages = [(stage, ) for stage in range(roi_head.num_stages)] if hasattr(roi_head, 'num_stages') else [()]
        rois = self.rois.to(inputs.device)
        for stage in stages:  # return every output: the tracer drops layers whose results go unused
            bbox_results = roi_head._bbox_forward(*stage, x, rois)
            outs += [bbox_results['cls_score'], bbox_results['bbox_pred']]
        if roi_head.with_mask:
            for stage in stages:
                outs.append(roi_head._mask_forward(*stage, x, rois[:self.num_mask_rois])['mask_preds'])
        return outs


class TensorForward(nn.Module):
    """``model._forward`` with fixed data samples, as a one-input module for the tracer."""

    def __init__(self, model, data_samples):
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs):
        return self.model._forward(inputs, self.data_samples)


def count_complexity(model, scope, shape):
    """Params and FLOPs of ``model`` (eval mode): whole model, conv+linear only, backbone, per operator."""
    model.eval()
    device = next(model.parameters()).device
    inputs = torch.randn(1, 3, *shape, device=device)
    if hasattr(model, 'roi_head'):
        network = TwoStageForward(model, shape)
    else:
        network = TensorForward(model, synthetic_data_samples(model, scope, 1, shape) if scope == 'mmdet' else None)
    analyzer = FlopAnalyzer(network, (inputs, ))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        by_operator = dict(analyzer.by_operator())
        by_module = analyzer.by_module()
    params = parameter_count(model)
    return dict(params=params[''], flops=analyzer.total(),
                conv_linear_flops=by_operator.get('conv', 0) + by_operator.get('linear', 0),
                backbone_params=params['backbone'], backbone_flops=by_module['model.backbone'],
                flops_by_operator=by_operator)


def config_complexity(cfg, shape=None, forms=('training', 'deploy')):
    """{form: complexity} for the config's model at ``shape`` (H, W; default per library), random weights.

    The deploy form is the training-form model with its large kernels merged.
    """
    scope = config_scope(cfg)
    shape = tuple(shape or PAPER_FLOPS_SHAPES[scope])
    model = build_model(cfg)
    if getattr(model, 'auxiliary_head', None) is not None:
        model.auxiliary_head = None  # training only
    results = {}
    if 'training' in forms:
        results['training'] = count_complexity(model, scope, shape)
    if 'deploy' in forms:
        switch_to_deploy(model)
        results['deploy'] = count_complexity(model, scope, shape)
    for result in results.values():
        result['shape'] = list(shape)
    return results
