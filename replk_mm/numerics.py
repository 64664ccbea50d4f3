"""The one error measure every check in replk_mm reports: ||out - ref|| / ||ref|| over all elements."""
import torch


def relative_error(out, ref):
    """Relative error of ``out`` against ``ref`` (tensors or equal-length sequences of tensors), in float64."""
    if isinstance(out, torch.Tensor):
        out, ref = [out], [ref]
    diff = sum(((o.double() - r.double()) ** 2).sum() for o, r in zip(out, ref, strict=True))
    norm = sum((r.double() ** 2).sum() for r in ref)
    return (diff.sqrt() / norm.sqrt()).item()
