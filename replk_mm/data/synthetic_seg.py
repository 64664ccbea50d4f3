"""Synthetic semantic segmentation data in the ADE20K and Cityscapes layouts.

Each image is a background class overlaid with random rectangles and ellipses of other classes;
a class is a fixed colour plus noise, so pixels and labels have a learnable relation. A thin
outline around each shape carries the dataset's ignore value, as unlabelled pixels do in ADE20K.
"""
import os.path as osp
from pathlib import Path

import cv2
import numpy as np


def class_colours(num_classes, seed=0):
    """A fixed, well-separated colour per class (BGR, uint8)."""
    rng = np.random.default_rng(seed)
    return rng.integers(20, 236, size=(num_classes, 3)).astype(np.float32)


def draw_sample(rng, size, class_ids, ignore_value, colours, max_shapes=6):
    """One (image BGR uint8, label uint8) pair; labels are drawn from ``class_ids``."""
    height, width = size
    label = np.full((height, width), rng.choice(class_ids), dtype=np.uint8)
    for _ in range(rng.integers(2, max_shapes + 1)):
        cls = int(rng.choice(class_ids))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        ax, ay = int(rng.integers(width // 10, width // 3)), int(rng.integers(height // 10, height // 3))
        if rng.random() < 0.5:
            cv2.rectangle(label, (cx - ax, cy - ay), (cx + ax, cy + ay), int(ignore_value), 2)
            cv2.rectangle(label, (cx - ax + 1, cy - ay + 1), (cx + ax - 1, cy + ay - 1), cls, -1)
        else:
            cv2.ellipse(label, (cx, cy), (ax, ay), 0, 0, 360, int(ignore_value), 2)
            cv2.ellipse(label, (cx, cy), (max(ax - 1, 1), max(ay - 1, 1)), 0, 0, 360, cls, -1)
    index = np.where(label == ignore_value, rng.choice(class_ids), label)
    image = colours[index] + rng.normal(0, 12, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_ade20k(root, num_train=40, num_val=10, size=(128, 128), num_classes=8, seed=0):
    """ADEChallengeData2016 layout: images/{training,validation}/*.jpg, annotations/*/*.png.

    Label values are 1..num_classes (ADE20K's first classes) and 0 = ignore (reduce_zero_label).
    Returns the dataset root.
    """
    root = Path(root)
    colours = class_colours(num_classes + 1, seed)
    rng = np.random.default_rng(seed)
    class_ids = np.arange(1, num_classes + 1)
    for split, count, prefix in (('training', num_train, 'ADE_train'), ('validation', num_val, 'ADE_val')):
        (root / 'images' / split).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, label = draw_sample(rng, size, class_ids, 0, colours)
            name = f'{prefix}_{i + 1:08d}'
            cv2.imwrite(str(root / 'images' / split / f'{name}.jpg'), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(str(root / 'annotations' / split / f'{name}.png'), label)
    return str(root)


def make_cityscapes(root, num_train=8, num_val=4, size=(128, 256), num_classes=19, seed=0):
    """Cityscapes layout: leftImg8bit/{train,val}/CITY/*_leftImg8bit.png and
    gtFine/{train,val}/CITY/*_gtFine_labelTrainIds.png with train ids 0..18 and 255 = ignore.
    Returns the dataset root.
    """
    root = Path(root)
    colours = class_colours(num_classes, seed)
    rng = np.random.default_rng(seed)
    class_ids = np.arange(num_classes)
    for split, count, city in (('train', num_train, 'aachen'), ('val', num_val, 'frankfurt')):
        image_dir = root / 'leftImg8bit' / split / city
        label_dir = root / 'gtFine' / split / city
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, label = draw_sample(rng, size, class_ids, 255, colours)
            stem = f'{city}_{i:06d}_000019'
            cv2.imwrite(osp.join(image_dir, f'{stem}_leftImg8bit.png'), image)
            cv2.imwrite(osp.join(label_dir, f'{stem}_gtFine_labelTrainIds.png'), label)
    return str(root)
