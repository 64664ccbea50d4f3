"""From a config and a trained checkpoint to predictions: a checked load, the MM inferencers, painted results.

mmseg's ``MMSegInferencer`` and mmdet's ``DetInferencer`` load weights non-strictly: a checkpoint of
another model, or of the other RepLKNet form (large kernels merged or not), only logs warnings and
leaves random weights. :func:`init_inferencer` builds the right one for the config's scope and refuses
such a checkpoint with one line naming the file and what was expected. It also lets mmengine's own
``torch.load`` (``weights_only=True``) read checkpoints written by training, for its call only.
"""
import json
import os
import os.path as osp
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch

from replk_mm.apis.builder import build_model
from replk_mm.apis.config import config_scope, load_run_config
from replk_mm.checkpoint.fit import check_fits_model
from replk_mm.checkpoint.formats import unwrap_state_dict
from replk_mm.checkpoint.io import mmengine_checkpoints_readable, safe_load, write_atomic

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
# Errors that mean bad input (a file, a key, an argument): one line and exit code 2, no traceback.
INPUT_ERRORS = (FileNotFoundError, NotADirectoryError, PermissionError, KeyError, TypeError, ValueError,
                RuntimeError)


@contextmanager
def exit_on_input_error(errors=INPUT_ERRORS, code=2):
    """In a tool: bad input (``errors``) ends it with ``error: ...`` on one line of stderr and exit ``code``."""
    try:
        yield
    except errors as err:
        message = err.args[0] if err.args else type(err).__name__
        print(f'error: {message}', file=sys.stderr)
        raise SystemExit(code) from None


def read_checkpoint(path):
    """``(checkpoint, state_dict)`` of a file, loaded with ``weights_only=True``; errors name the file."""
    checkpoint = safe_load(path)
    state = unwrap_state_dict(checkpoint)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'{path}: expected a checkpoint with a state dict of tensors (at the top level, under '
                         f"'state_dict' or 'model'), found none")
    return checkpoint if isinstance(checkpoint, dict) else {}, state


def load_checked_model(cfg, config, checkpoint):
    """The config's model (one process, eval mode, on the CPU) with the checkpoint's weights, after the fit check.

    ``model.dataset_meta`` is the checkpoint's if it has one.
    """
    meta_checkpoint, state = read_checkpoint(checkpoint)
    model = build_model(cfg)
    check_fits_model(checkpoint, state, model.state_dict(), config)
    model.load_state_dict(state, strict=True)
    dataset_meta = (meta_checkpoint.get('meta') or {}).get('dataset_meta')
    if dataset_meta:
        model.dataset_meta = dict(dataset_meta)
    return model.eval()


def init_inferencer(config, checkpoint, cfg_options=None, device=None):
    """``MMSegInferencer`` or ``DetInferencer`` (by the config's ``default_scope``) with a checked checkpoint.

    The file is read with ``weights_only=True`` and its keys and shapes compared with the built model,
    before anything is predicted; a mismatch raises ValueError naming the file and what was expected.
    """
    cfg = load_run_config(config, cfg_options)
    scope = config_scope(cfg)
    _, state = read_checkpoint(checkpoint)
    if scope == 'mmseg':
        from mmseg.apis import MMSegInferencer as Inferencer
    else:
        from mmdet.apis import DetInferencer as Inferencer
    with mmengine_checkpoints_readable():
        inferencer = Inferencer(model=cfg, weights=checkpoint, device=device)
    check_fits_model(checkpoint, state, inferencer.model.state_dict(), config)
    inferencer.show_progress = False  # callers iterate over images themselves
    return inferencer


def predict(inferencer, image):
    """The data sample an inferencer predicts for one image (a path, or a BGR array as mmcv reads it)."""
    result = inferencer(image, return_datasamples=True)
    if isinstance(result, dict):
        result = result['predictions']
    return result[0] if isinstance(result, (list, tuple)) else result


def list_images(inputs):
    """``[(image path, output name)]`` for image files and folders (searched recursively, sorted).

    An image given by itself is named by its file name; one found in a folder by its path below that
    folder, with '/' turned into '__'. Raises FileNotFoundError for a missing input, ValueError for a folder
    without images or two inputs that would write the same output.
    """
    images = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob('*') if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ValueError(f'{item}: no images ({", ".join(IMAGE_EXTENSIONS)}) in this folder')
            images += [(str(p), '__'.join(p.relative_to(path).with_suffix('').parts)) for p in found]
        elif path.is_file():
            images.append((str(path), path.stem))
        else:
            raise FileNotFoundError(f'input not found: {item}')
    seen = {}
    for image, name in images:
        if name in seen and not osp.samefile(seen[name], image):
            raise ValueError(f'{seen[name]} and {image} would both be written as {name}: give them separately '
                             'from different folders, or rename one')
        seen[name] = image
    return list(dict.fromkeys(images))


def read_image(path):
    """A BGR image array; ValueError naming the file if it cannot be decoded."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'{path}: cannot read this file as an image (unsupported format or damaged)')
    return image


def check_writable_dir(directory):
    """Create ``directory`` if needed and prove a file can be written there; OSError becomes a named ValueError."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise ValueError(f'cannot write to {directory}: {err.strerror or err}') from None


def write_image_atomic(path, image):
    """A BGR image to ``path`` (format from the extension), whole or not at all."""
    ok, encoded = cv2.imencode(osp.splitext(path)[1], image)
    if not ok:
        raise ValueError(f'{path}: OpenCV cannot encode an image in this format')
    write_atomic(path, lambda tmp: Path(tmp).write_bytes(encoded.tobytes()))


def class_names_and_palette(dataset_meta, num_classes):
    """Names and RGB colours for ``num_classes`` labels; missing ones are numbered and given fixed colours."""
    classes = list((dataset_meta or {}).get('classes') or [])
    palette = (dataset_meta or {}).get('palette')
    palette = [tuple(int(c) for c in colour) for colour in palette] if isinstance(palette, (list, tuple)) else []
    classes += [f'class {i}' for i in range(len(classes), num_classes)]
    rng = np.random.default_rng(0)
    palette += [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(len(palette), num_classes)]
    return classes, palette


def paint_segmentation(image, labels, classes, palette, opacity=0.5):
    """The BGR image with its label map as a colour overlay, and a legend panel on the right.

    The legend lists the classes present, largest area first, with their share of the pixels; the
    canvas grows downwards if the list is taller than the image.
    """
    height, width = labels.shape
    colours = np.array([colour[::-1] for colour in palette], dtype=np.uint8)  # RGB -> BGR
    overlay = (image * (1 - opacity) + colours[labels] * opacity).round().astype(np.uint8)

    present, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind='stable')
    font, scale, thickness, row = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1, 18
    entries = [(int(present[i]), f'{classes[present[i]]} {100 * counts[i] / labels.size:.1f}%') for i in order]
    text_width = max([cv2.getTextSize(text, font, scale, thickness)[0][0] for _, text in entries] + [0])
    panel_width = 12 + 14 + 8 + text_width + 12
    canvas = np.full((max(height, 8 + row * len(entries) + 4), width + panel_width, 3), 255, dtype=np.uint8)
    canvas[:height, :width] = overlay
    for n, (label, text) in enumerate(entries):
        top = 8 + n * row
        x = width + 12
        cv2.rectangle(canvas, (x, top), (x + 13, top + 13), tuple(int(c) for c in colours[label]), -1)
        cv2.rectangle(canvas, (x, top), (x + 13, top + 13), (0, 0, 0), 1)
        cv2.putText(canvas, text, (x + 22, top + 11), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return canvas


def paint_detections(inferencer, image, sample, score_thr):
    """The BGR image with the predicted boxes, masks, class names and scores drawn by mmdet's visualizer."""
    inferencer.visualizer.add_datasample('image', image[:, :, ::-1], sample, draw_gt=False, show=False,
                                         pred_score_thr=score_thr)
    return inferencer.visualizer.get_image()[:, :, ::-1]


def detections_to_dict(inferencer, sample, classes):
    """JSON-ready detections: boxes (x1, y1, x2, y2 in image pixels), scores, labels, class names, RLE masks."""
    result = inferencer.pred2dict(sample)
    result['class_names'] = [classes[label] for label in result['labels']]
    return result


def label_map_to_png_array(labels):
    """A label map as PNG pixels: 8 bits if every label fits, else 16."""
    return labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16)


def run_inference(inferencer, images, out_dir, score_thr=0.3, opacity=0.5, progress=True):
    """Predict, paint and save each ``(path, name)`` of :func:`list_images` under ``out_dir``.

    Writes ``vis/NAME.png`` (painted) and ``pred/NAME.png`` (segmentation: the label map, values = class
    indices) or ``pred/NAME.json`` (detection). Every file is written whole or not at all. Returns the
    list of painted files.
    """
    from tqdm import tqdm
    vis_dir, pred_dir = osp.join(out_dir, 'vis'), osp.join(out_dir, 'pred')
    for directory in (vis_dir, pred_dir):
        check_writable_dir(directory)
    segmentation = hasattr(inferencer.model, 'decode_head')
    if segmentation:
        num_classes = inferencer.model.decode_head.num_classes
    else:
        num_classes = len(inferencer.model.dataset_meta.get('classes') or [])
    classes, palette = class_names_and_palette(inferencer.model.dataset_meta, num_classes)
    painted = []
    for path, name in tqdm(images, desc='images', unit='img', disable=not progress):
        image = read_image(path)
        sample = predict(inferencer, image)
        vis_path = osp.join(vis_dir, f'{name}.png')
        if segmentation:
            labels = sample.pred_sem_seg.data[0].cpu().numpy()
            write_image_atomic(vis_path, paint_segmentation(image, labels, classes, palette, opacity))
            write_image_atomic(osp.join(pred_dir, f'{name}.png'), label_map_to_png_array(labels))
        else:
            write_image_atomic(vis_path, paint_detections(inferencer, image, sample, score_thr))
            text = json.dumps(detections_to_dict(inferencer, sample, classes))
            write_atomic(osp.join(pred_dir, f'{name}.json'), lambda tmp: Path(tmp).write_text(text))
        painted.append(vis_path)
    return painted
