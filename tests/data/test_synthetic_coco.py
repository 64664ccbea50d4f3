"""The synthetic COCO generator writes real COCO instance annotations that pycocotools and mmdet read."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from replk_mm.data import make_coco

NUM_TRAIN, NUM_VAL, SIZE = 6, 4, (96, 128)


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    return Path(make_coco(tmp_path_factory.mktemp('coco'), num_train=NUM_TRAIN, num_val=NUM_VAL, size=SIZE))


def load(root, split):
    return COCO(str(root / 'annotations' / f'instances_{split}.json'))


@pytest.mark.parametrize('split,count', [('train2017', NUM_TRAIN), ('val2017', NUM_VAL)])
def test_layout_and_counts(coco_root, split, count):
    coco = load(coco_root, split)
    assert len(coco.getImgIds()) == count
    assert sorted(p.name for p in (coco_root / split).glob('*.jpg')) == sorted(
        img['file_name'] for img in coco.dataset['images'])
    for img in coco.dataset['images']:
        assert (img['height'], img['width']) == SIZE
        assert cv2.imread(str(coco_root / split / img['file_name'])).shape == (*SIZE, 3)
    assert [(c['id'], c['name']) for c in coco.dataset['categories']] == [(1, 'person'), (2, 'bicycle'), (3, 'car')]


@pytest.mark.parametrize('split', ['train2017', 'val2017'])
def test_crowd_and_empty_images(coco_root, split):
    coco = load(coco_root, split)
    anns = coco.dataset['annotations']
    crowd = [a for a in anns if a['iscrowd']]
    assert len(crowd) == 1 and isinstance(crowd[0]['segmentation']['counts'], list)  # uncompressed RLE
    empty = [i for i in coco.getImgIds() if not coco.getAnnIds(imgIds=i)]
    assert len(empty) == 1
    assert len({a['image_id'] for a in anns if not a['iscrowd']}) == len(coco.getImgIds()) - 1
    assert {a['category_id'] for a in anns} <= {1, 2, 3}
    assert len({a['id'] for a in anns}) == len(anns)


@pytest.mark.parametrize('split', ['train2017', 'val2017'])
def test_geometry_inside_image(coco_root, split):
    coco = load(coco_root, split)
    height, width = SIZE
    for ann in coco.dataset['annotations']:
        if not ann['iscrowd']:
            for polygon in ann['segmentation']:
                xy = np.array(polygon).reshape(-1, 2)
                assert len(xy) >= 3
                assert (xy >= 0).all() and (xy[:, 0] <= width - 1).all() and (xy[:, 1] <= height - 1).all()
        x, y, w, h = ann['bbox']
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
        assert min(w, h) >= 6  # learnable sizes, not specks
        mask = coco.annToMask(ann)
        assert ann['area'] == mask.sum() > 0
        ys, xs = np.nonzero(mask)
        assert [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()] == ann['bbox']


def test_objects_do_not_overlap(coco_root):
    coco = load(coco_root, 'train2017')
    for image_id in coco.getImgIds():
        masks = [coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id))]
        if masks:
            assert np.sum(masks, axis=0).max() == 1


def test_deterministic(tmp_path):
    first = make_coco(tmp_path / 'a', num_train=3, num_val=2, seed=1)
    second = make_coco(tmp_path / 'b', num_train=3, num_val=2, seed=1)
    for split in ('train2017', 'val2017'):
        path = Path('annotations') / f'instances_{split}.json'
        assert json.loads((Path(first) / path).read_text()) == json.loads((Path(second) / path).read_text())


def test_mmdet_coco_dataset_reads_it(coco_root):
    """Training drops the empty image (filter_empty_gt), testing keeps it; the crowd becomes an ignored box."""
    from mmdet.datasets import CocoDataset
    kwargs = dict(data_root=str(coco_root), metainfo=dict(classes=('person', 'bicycle', 'car')), pipeline=[])
    train = CocoDataset(ann_file='annotations/instances_train2017.json', data_prefix=dict(img='train2017/'),
                        filter_cfg=dict(filter_empty_gt=True, min_size=32), **kwargs)
    val = CocoDataset(ann_file='annotations/instances_val2017.json', data_prefix=dict(img='val2017/'),
                      test_mode=True, **kwargs)
    assert (len(train), len(val)) == (NUM_TRAIN - 1, NUM_VAL)
    instances = [inst for i in range(len(train)) for inst in train.get_data_info(i)['instances']]
    assert sum(inst['ignore_flag'] for inst in instances) == 1
    assert {inst['bbox_label'] for inst in instances} <= {0, 1, 2}


def test_sizes_per_image(tmp_path):
    """``sizes`` gives each image its own size, cycled; boxes and masks stay inside each image."""
    sizes = [(96, 128), (128, 80), (72, 144)]
    root = Path(make_coco(tmp_path, num_train=4, num_val=3, sizes=sizes, seed=3))
    for split, count in (('train2017', 4), ('val2017', 3)):
        coco = load(root, split)
        for i, img in enumerate(coco.dataset['images']):
            size = sizes[i % len(sizes)]
            assert (img['height'], img['width']) == size
            assert cv2.imread(str(root / split / img['file_name'])).shape == (*size, 3)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
                x, y, w, h = ann['bbox']
                assert x >= 0 and y >= 0 and x + w <= size[1] and y + h <= size[0]
                assert coco.annToMask(ann).shape == size
