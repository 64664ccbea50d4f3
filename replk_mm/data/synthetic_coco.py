"""Synthetic instance segmentation data in the COCO layout, for the detection tests.

Each category has its own shape and colour (person: red rectangle, bicycle: green ellipse,
car: blue triangle) on a noisy grey background, so boxes, masks and labels are learnable. Objects
do not overlap, so every polygon is exactly the visible mask. The annotations are real COCO json:
polygon ``segmentation``, ``area``, ``bbox`` [x, y, w, h], ``iscrowd``; the first image of each
split has no objects, and the second carries a crowd region (uncompressed RLE, as COCO stores them).
"""
import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

# The first COCO categories, with their official ids and names, so mmdet's CocoDataset maps them as usual.
CATEGORIES = [dict(id=1, name='person', supercategory='person'),
              dict(id=2, name='bicycle', supercategory='vehicle'),
              dict(id=3, name='car', supercategory='vehicle')]
COLOURS = {1: (40, 40, 210), 2: (40, 190, 40), 3: (210, 90, 30)}  # BGR


def shape_polygon(rng, category_id, box):
    """The outline of one object inside ``box`` = (x0, y0, x1, y1), as an (N, 2) int array."""
    x0, y0, x1, y1 = box
    if category_id == 1:
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    if category_id == 2:
        centre = ((x0 + x1) // 2, (y0 + y1) // 2)
        axes = ((x1 - x0) // 2, (y1 - y0) // 2)
        return cv2.ellipse2Poly(centre, axes, 0, 0, 360, 20)
    apex = int(rng.integers(x0, x1 + 1))
    return np.array([[apex, y0], [x1, y1], [x0, y1]])


def place_boxes(rng, size, count, min_side, max_side, tries=50):
    """Up to ``count`` non-overlapping boxes (x0, y0, x1, y1), 2 px apart, inside a (height, width) image."""
    height, width = size
    boxes = []
    for _ in range(count * tries):
        if len(boxes) == count:
            break
        w, h = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        box = (x0, y0, x0 + w - 1, y0 + h - 1)
        if all(box[0] > b[2] + 2 or b[0] > box[2] + 2 or box[1] > b[3] + 2 or b[1] > box[3] + 2 for b in boxes):
            boxes.append(box)
    return boxes


def draw_image(rng, size, objects):
    """A noisy grey background with each (category_id, polygon) filled in its colour, plus noise."""
    image = np.full((*size, 3), 120, np.float32)
    for category_id, polygon in objects:
        cv2.fillPoly(image, [polygon.astype(np.int32)], COLOURS[category_id])
    image += rng.normal(0, 15, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def polygon_annotation(category_id, polygon, size):
    """A COCO polygon annotation; area and bbox are those of the rasterised mask."""
    segmentation = [polygon.astype(float).ravel().tolist()]
    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, *size))
    return dict(category_id=category_id, segmentation=segmentation, iscrowd=0,
                area=float(mask_utils.area(rle)), bbox=mask_utils.toBbox(rle).tolist())


def uncompressed_rle(mask):
    """COCO's uncompressed RLE of a binary mask: column-major run lengths, starting with a run of zeros."""
    flat = mask.ravel(order='F')
    bounds = np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]
    counts = ([0] if flat[0] else []) + np.diff(bounds).tolist()
    return dict(counts=counts, size=list(mask.shape))


def crowd_annotation(rng, size, box, category_id=1):
    """A crowd region: a row of small objects of one category under one uncompressed-RLE mask."""
    x0, y0, x1, y1 = box
    mask = np.zeros(size, np.uint8)
    objects = []
    for bx in range(x0, x1 - 5, 8):
        polygon = shape_polygon(rng, category_id, (bx, y0, bx + 5, y1))
        cv2.fillPoly(mask, [polygon.astype(np.int32)], 1)
        objects.append((category_id, polygon))
    segmentation = uncompressed_rle(mask)
    rle = mask_utils.frPyObjects(segmentation, *size)
    annotation = dict(category_id=category_id, segmentation=segmentation, iscrowd=1,
                      area=float(mask_utils.area(rle)), bbox=mask_utils.toBbox(rle).tolist())
    return annotation, objects


def make_coco(root, num_train=16, num_val=6, size=(128, 128), max_objects=3, seed=0, sizes=None):
    """COCO 2017 layout under ``root``: {train,val}2017/*.jpg and annotations/instances_{train,val}2017.json.

    ``size`` is (height, width); ``sizes``, a list of them, gives image i of each split the size
    ``sizes[i % len(sizes)]`` instead (what whole-image testing meets). Image 0 of each split is empty,
    image 1 holds a crowd region. Returns the dataset root.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    sizes = [tuple(s) for s in sizes] if sizes else [tuple(size)]
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    image_id, annotation_id = 0, 0
    for split, count in (('train2017', num_train), ('val2017', num_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            size = sizes[i % len(sizes)]
            height, width = size
            min_side, max_side = max(min(size) // 6, 8), max(min(size) // 3, 12)
            image_id += 1
            file_name = f'{image_id:012d}.jpg'
            num_objects = 0 if i == 0 else int(rng.integers(1, max_objects + 1))
            boxes = place_boxes(rng, size, num_objects + (i == 1), min_side, max_side)
            objects, image_annotations = [], []
            if i == 1:  # the first box holds a crowd
                annotation, crowd_objects = crowd_annotation(rng, size, boxes.pop(0))
                image_annotations.append(annotation)
                objects += crowd_objects
            for box in boxes:
                category_id = int(rng.integers(1, len(CATEGORIES) + 1))
                polygon = shape_polygon(rng, category_id, box)
                objects.append((category_id, polygon))
                image_annotations.append(polygon_annotation(category_id, polygon, size))
            cv2.imwrite(str(root / split / file_name), draw_image(rng, size, objects),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
            for annotation in image_annotations:
                annotation_id += 1
                annotations.append(dict(annotation, id=annotation_id, image_id=image_id))
        coco = dict(info=dict(description='replk_mm synthetic COCO'), licenses=[], images=images,
                    annotations=annotations, categories=CATEGORIES)
        (root / 'annotations' / f'instances_{split}.json').write_text(json.dumps(coco))
    return str(root)
