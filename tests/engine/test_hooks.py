import re

import pytest
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from replk_mm.engine.hooks import SegLabelRangeHook


def batch_of(*label_maps):
    samples = []
    for index, labels in enumerate(label_maps):
        sample = SegDataSample(metainfo=dict(seg_map_path=f'ann/{index}.png'))
        sample.gt_sem_seg = PixelData(data=torch.as_tensor(labels)[None])
        samples.append(sample)
    return dict(inputs=[], data_samples=samples)


def label_hook(num_classes=150):
    hook = SegLabelRangeHook(ignore_index=255)
    hook.num_classes = num_classes
    return hook


def test_the_class_range_and_the_ignore_index_pass_and_their_neighbours_do_not():
    hook = label_hook()
    hook.before_train_iter(None, 0, batch_of([[0, 149], [255, 7]], [[3, 3], [3, 3]]))
    for value in (150, 254, -1):
        with pytest.raises(ValueError, match=re.escape(f'ann/0.png has values [{value}] outside')):
            hook.before_train_iter(None, 0, batch_of([[0, 149], [255, value]]))


@pytest.mark.parametrize('bad, named', [(150, [150, 199]), (-1, [-1, 199])])
def test_values_outside_the_classes_name_the_file_and_every_bad_value(bad, named):
    batch = batch_of([[0, 1], [2, 3]], [[bad, 199], [255, 199]])
    expected = re.escape(f'ann/1.png has values {named} outside the 150 classes (0..149')
    with pytest.raises(ValueError, match=expected):
        label_hook().before_train_iter(None, 0, batch)
