"""Checks of a COCO-format annotation file before training, with messages that name what is wrong.

mmdet finds a missing image only when the pipeline first reaches it, deep into training, and
silently drops boxes without area or outside the image. Here a missing image or an empty
annotation list is an error up front; degenerate and out-of-image boxes are reported by
annotation id (mmdet skips or clips them, and real COCO has a few, so they only warn).
"""
import json
import os.path as osp

from mmengine.logging import print_log


def check_coco_annotations(ann_file, img_dir, for_training=True):
    """Raise for missing images or (when training) no annotations; warn about bad boxes."""
    try:
        with open(ann_file) as f:
            coco = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f'{ann_file}: not valid JSON ({err})') from None
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(coco.get(key), list):
            raise ValueError(f"{ann_file}: expected a list under '{key}' (COCO format)")
    missing = [image['file_name'] for image in coco['images']
               if not osp.isfile(osp.join(img_dir, image['file_name']))]
    if missing:
        raise FileNotFoundError(f'{ann_file}: {len(missing)} image(s) listed there are missing from {img_dir}: '
                                f'{", ".join(missing[:5])}')
    if for_training and not coco['annotations']:
        raise ValueError(f"{ann_file}: 'annotations' is empty: there is nothing to train on")

    sizes = {image['id']: (image['width'], image['height']) for image in coco['images']}
    degenerate, outside = [], []
    for ann in coco['annotations']:
        x, y, w, h = ann['bbox']
        width, height = sizes[ann['image_id']]
        if w < 1 or h < 1 or ann.get('area', 1) <= 0:
            degenerate.append(ann['id'])
        elif x < 0 or y < 0 or x + w > width or y + h > height:
            outside.append(ann['id'])
    if degenerate:
        print_log(f'{ann_file}: {len(degenerate)} box(es) with no area (expected width and height >= 1), '
                  f'mmdet skips them: annotation ids {degenerate[:10]}', logger='current', level=30)
    if outside:
        print_log(f'{ann_file}: {len(outside)} box(es) reach outside their image (expected inside '
                  f'[0, width] x [0, height]), mmdet clips them: annotation ids {outside[:10]}',
                  logger='current', level=30)
    return dict(degenerate=degenerate, outside=outside)
