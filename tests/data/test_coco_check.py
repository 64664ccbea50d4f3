"""COCO annotation problems are caught before training, naming the file and what was expected."""
import json

import pytest
from mmengine.logging import MMLogger

from replk_mm.data import check_coco_annotations, make_coco

from e2e.helpers import PROJECT_ROOT, run_tool


@pytest.fixture
def coco(tmp_path):
    make_coco(tmp_path / "coco", num_train=4, num_val=2)
    return tmp_path / 'coco', tmp_path / 'coco' / 'annotations' / 'instances_train2017.json'


def edit(ann_file, change):
    data = json.loads(ann_file.read_text())
    change(data)
    ann_file.write_text(json.dumps(data))
    return data


def test_clean_set_passes(coco):
    root, ann_file = coco
    assert check_coco_annotations(ann_file, root / 'train2017') == dict(degenerate=[], outside=[])


def test_missing_image_file_is_named(coco):
    root, ann_file = coco
    name = json.loads(ann_file.read_text())['images'][2]['file_name']
    (root / 'train2017' / name).unlink()
    with pytest.raises(FileNotFoundError, match=rf'instances_train2017.json: 1 image\(s\) .* missing .*{name}'):
        check_coco_annotations(ann_file, root / 'train2017')


def test_empty_annotation_list_fails_for_training_only(coco):
    root, ann_file = coco
    edit(ann_file, lambda data: data.update(annotations=[]))
    with pytest.raises(ValueError, match="instances_train2017.json: 'annotations' is empty"):
        check_coco_annotations(ann_file, root / 'train2017')
    assert check_coco_annotations(ann_file, root / 'train2017', for_training=False)['degenerate'] == []


def test_degenerate_and_out_of_image_boxes_are_reported_by_id(coco, capsys):
    root, ann_file = coco

    def break_boxes(data):
        data['annotations'][0]['bbox'][2] = 0
        width = data['images'][0]['width']
        data['annotations'][1]['bbox'][0] = width - 2

    data = edit(ann_file, break_boxes)
    MMLogger.get_instance('coco_check_test')
    found = check_coco_annotations(ann_file, root / 'train2017')
    assert found == dict(degenerate=[data['annotations'][0]['id']], outside=[data['annotations'][1]['id']])
    assert 'mmdet skips them' in capsys.readouterr().out


def test_train_tool_stops_before_training_on_a_missing_image(coco, tmp_path):
    root, ann_file = coco
    name = json.loads(ann_file.read_text())['images'][0]['file_name']
    (root / 'train2017' / name).unlink()
    result = run_tool(['tools/train.py', PROJECT_ROOT / 'configs' / 'cascade_mask_rcnn_replknet_tiny_synthetic_coco.py',
                       '--work-dir', tmp_path / 'work', '--cfg-options', f'train_dataloader.dataset.data_root={root}/',
                       f'val_dataloader.dataset.data_root={root}/'])
    assert result.returncode != 0
    assert name in result.stderr and 'missing' in result.stderr and 'Traceback' not in result.stderr
