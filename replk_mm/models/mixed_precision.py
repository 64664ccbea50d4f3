"""Where the detectors must leave half precision for float32 under mixed precision.

mmcv 2.1.0's kernels (CPU and CUDA): RoIAlign is compiled for float32/float64/float16, not bf16; NMS reads
its boxes as float32 only. mmdet builds the anchors, and so the proposals, in the dtype of the RPN's
scores, and pools RoIs in the features' dtype: under autocast NMS fails for fp16 and bf16 (``expected
scalar type Float but found BFloat16``), RoIAlign for bf16 (``"roi_align_forward_cuda_kernel" not
implemented for 'BFloat16'``). Boxes should not be half precision anyway: bf16 keeps 8 significant bits,
so a box edge past x=1024 moves in steps of 8 pixels. mmdet's FCOSHead returns its box distances in
float32 but makes its points in the class scores' dtype, so under bf16 its detections past x=1024 shift
by up to 4 pixels. These subclasses run only the box decoding, NMS and RoI pooling in float32; the
backbone, neck and heads keep the autocast dtype.
"""
import torch
from mmdet.models.dense_heads import FCOSHead, RPNHead
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.registry import MODELS


@MODELS.register_module()
class FP32ProposalRPNHead(RPNHead):
    """RPNHead whose proposals are decoded and NMS-filtered in float32.

    Only the proposal post-processing sees float32 scores and deltas (mmdet detaches them there); the
    RPN losses are computed from the head's half-precision outputs as before.
    """

    def predict_by_feat(self, cls_scores, bbox_preds, *args, **kwargs):
        return super().predict_by_feat(_float32(cls_scores), _float32(bbox_preds), *args, **kwargs)


@MODELS.register_module()
class FP32PredictionFCOSHead(FCOSHead):
    """FCOSHead whose detections are decoded (points included) and NMS-filtered in float32.

    Only the prediction post-processing sees float32 scores, distances and centernesses; the losses
    are computed from the head's outputs as before (mmdet makes the training points in float32).
    """

    def predict_by_feat(self, cls_scores, bbox_preds, score_factors=None, *args, **kwargs):
        return super().predict_by_feat(_float32(cls_scores), _float32(bbox_preds), _float32(score_factors),
                                       *args, **kwargs)


def _float32(levels):
    """A dense head's per-level outputs in float32 (None, for heads without score factors, stays None)."""
    return None if levels is None else [level.float() for level in levels]


@MODELS.register_module()
class FP32RoIExtractor(SingleRoIExtractor):
    """SingleRoIExtractor that pools in float32 under mixed precision.

    mmdet's extractor casts the RoIs to the features' dtype and calls RoIAlign in it. Here half-precision
    (fp16, bf16) features and the RoIs go into RoIAlign as float32; the pooled features come back in the
    features' dtype, so the box and mask heads after it still run in half precision. float32 and float64
    models are untouched.
    """

    def forward(self, feats, rois, roi_scale_factor=None):
        dtype = feats[0].dtype
        if dtype in (torch.float32, torch.float64):
            return super().forward(feats, rois, roi_scale_factor)
        roi_feats = super().forward(tuple(feat.float() for feat in feats), rois.float(), roi_scale_factor)
        return roi_feats.to(dtype)
