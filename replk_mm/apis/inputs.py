"""Synthetic model inputs for the FLOPs and benchmark tools: random boxes and data samples with meta data."""
import numpy as np
import torch

from .builder import num_classes

SCOPES = ('mmseg', 'mmdet')


def random_boxes(num, shape, generator, min_side=0.2, max_side=0.6):
    """``num`` (x1, y1, x2, y2) boxes inside an image of ``shape`` (H, W), each side a uniform fraction of the
    image's side in [min_side, max_side)."""
    height, width = shape
    sizes = torch.rand(num, 2, generator=generator) * (max_side - min_side) + min_side
    corners = torch.rand(num, 2, generator=generator) * (1 - sizes)
    scale = torch.tensor([width, height], dtype=torch.float32)
    return torch.cat([corners * scale, (corners + sizes) * scale], dim=1)


def synthetic_data_samples(model, scope, batch_size, shape, with_labels=False, seed=0):
    """Data samples of the right kind and meta data for ``batch_size`` inputs of ``shape`` (H, W).

    ``with_labels`` adds ground truth for ``mode='loss'``: a random label map (segmentation) or three
    boxes with box-shaped masks per image (detection).
    """
    if scope not in SCOPES:
        raise ValueError(f'scope must be one of {SCOPES}, got {scope!r}')
    height, width = shape
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                batch_input_shape=(height, width), scale_factor=(1.0, 1.0))
    generator = torch.Generator().manual_seed(seed)
    classes = num_classes(model) if with_labels else 0
    samples = []
    for _ in range(batch_size):
        if scope == 'mmseg':
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=meta)
            if with_labels:
                sample.gt_sem_seg = PixelData(data=torch.randint(0, classes, (1, height, width), generator=generator))
        else:
            from mmdet.structures import DetDataSample
            from mmdet.structures.mask import BitmapMasks
            from mmengine.structures import InstanceData
            sample = DetDataSample(metainfo=meta)
            if with_labels:
                boxes = random_boxes(3, shape, generator)
                masks = np.zeros((3, height, width), dtype=np.uint8)
                for mask, (x1, y1, x2, y2) in zip(masks, boxes.round().int().tolist()):
                    mask[y1:y2, x1:x2] = 1
                sample.gt_instances = InstanceData(
                    bboxes=boxes, labels=torch.randint(0, classes, (3, ), generator=generator),
                    masks=BitmapMasks(masks, height, width))
        samples.append(sample)
    return samples
