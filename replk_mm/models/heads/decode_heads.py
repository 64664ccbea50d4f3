"""mmseg's UPerHead and FCNHead without their slow training paths; same parameters, losses and gradients.

Per UperNet step at batch 8 on an H200, the stock heads spent 65 ms in the atomic-add backward of bilinear
upsampling and 32 ms in the ``topk`` of mmseg's accuracy. Here every bilinear resize of a head (the logits to
the label size, and UPerHead's pyramid and top-down resizes) is :func:`bilinear_resize`, whose backward is matrix
products, and the training accuracy is an argmax. The sampler, class weights, ``avg_non_ignore``, ``ignore_index``
and ``align_corners`` are handled by mmseg's own modules, unchanged; inference (``predict_by_feat``) is mmseg's.
State dicts are interchangeable with mmseg's classes.
"""
import torch
from mmseg.models.decode_heads import FCNHead, UPerHead
from torch import nn

from replk_mm.registry import register_model

from .resize import bilinear_resize


def top1_accuracy(logits, target, ignore_index=None):
    """mmseg's ``accuracy(logits, target, topk=1, ignore_index=...)`` in percent, from an argmax (no ``topk``).

    Args:
        logits (Tensor): (N, num_classes, ...).
        target (Tensor): (N, ...) class indices; pixels equal to ``ignore_index`` count neither way.

    Returns:
        Tensor: shape (1,), as mmseg's.
    """
    hits = logits.argmax(dim=1) == target
    if ignore_index is None:
        correct, total = hits.sum(), target.numel()
    else:
        valid = target != ignore_index
        correct, total = (hits & valid).sum(), valid.sum()
    eps = torch.finfo(torch.float32).eps  # mmseg's, so that no valid pixel gives 100 * eps / eps
    return ((correct.float() + eps) * 100.0 / (total + eps)).reshape(1)


class MatmulResizeLossMixin:
    """``loss_by_feat`` of mmseg's BaseDecodeHead with the logits resized by :func:`bilinear_resize`."""

    def loss_by_feat(self, seg_logits, batch_data_samples):
        seg_label = self._stack_batch_gt(batch_data_samples)
        seg_logits = bilinear_resize(seg_logits, seg_label.shape[2:], self.align_corners)
        seg_weight = None if self.sampler is None else self.sampler.sample(seg_logits, seg_label)
        seg_label = seg_label.squeeze(1)
        loss_modules = self.loss_decode if isinstance(self.loss_decode, nn.ModuleList) else [self.loss_decode]
        losses = {}
        for loss_module in loss_modules:
            value = loss_module(seg_logits, seg_label, weight=seg_weight, ignore_index=self.ignore_index)
            name = loss_module.loss_name
            losses[name] = losses[name] + value if name in losses else value
        losses['acc_seg'] = top1_accuracy(seg_logits, seg_label, ignore_index=self.ignore_index)
        return losses


@register_model
class FastUPerHead(MatmulResizeLossMixin, UPerHead):
    """mmseg's ``UPerHead`` (same arguments and parameters) with matrix-product resizes and an argmax accuracy."""

    def psp_forward(self, inputs):
        top = inputs[-1]
        pooled = [bilinear_resize(stage(top), top.shape[2:], self.align_corners) for stage in self.psp_modules]
        return self.bottleneck(torch.cat([top, *pooled], dim=1))

    def _forward_feature(self, inputs):
        inputs = self._transform_inputs(inputs)
        laterals = [lateral_conv(inputs[level]) for level, lateral_conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(inputs))
        for level in range(len(laterals) - 1, 0, -1):  # top-down: each level adds the upsampled one above
            laterals[level - 1] = laterals[level - 1] + bilinear_resize(
                laterals[level], laterals[level - 1].shape[2:], self.align_corners)
        outs = [fpn_conv(lateral) for fpn_conv, lateral in zip(self.fpn_convs, laterals[:-1])] + laterals[-1:]
        finest = outs[0].shape[2:]
        outs = [outs[0]] + [bilinear_resize(out, finest, self.align_corners) for out in outs[1:]]
        return self.fpn_bottleneck(torch.cat(outs, dim=1))


@register_model
class FastFCNHead(MatmulResizeLossMixin, FCNHead):
    """mmseg's ``FCNHead`` (same arguments and parameters) with a matrix-product logits resize and argmax accuracy."""
