"""tools/infer.py, tools/export_onnx.py and the MM inferencers on the tiny configs.

In-process tests call the tools' ``main`` on 'trained' checkpoints written here (random weights, random BN
statistics); the slow ones train the tiny segmentor with tools/train.py, and compare the inferencers'
and tools/infer.py's label maps with tools/test.py's, and the detector's boxes with tools/test.py's.
"""
import collections
import copy
import json
import os
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from replk_mm.apis.builder import build_model
from replk_mm.apis.export import ExportableAdaptiveAvgPool2d, graph_summary, onnxruntime_outputs
from replk_mm.data import make_ade20k, make_coco
from replk_mm.numerics import relative_error

from conftest import PROJECT_ROOT, randomize_bn_stats, run_main
from e2e.helpers import check, run_tool

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

SEG_CONFIG = PROJECT_ROOT / 'configs' / 'upernet_replknet_tiny_synthetic_ade20k.py'
DET_CONFIG = PROJECT_ROOT / 'configs' / 'cascade_mask_rcnn_replknet_tiny_synthetic_coco.py'
DEPLOY = ['--cfg-options', 'model.backbone.small_kernel_merged=True']
SEG_KERNELS = ['31x31', '29x29', '27x27', '27x27', '13x13']  # the tiny arch: layers [1, 1, 2, 1]


def save_checkpoint(cfg, path, deploy=False, classes=None):
    """A 'trained' checkpoint of ``cfg``'s model in mmengine's format; returns the model (eval mode)."""
    torch.manual_seed(0)
    model = randomize_bn_stats(build_model(cfg)).eval()
    if deploy:
        model.backbone.switch_to_deploy()
    meta = {'iter': 4, 'dataset_meta': {'classes': classes}} if classes else {'iter': 4}
    torch.save({'meta': meta, 'state_dict': model.state_dict()}, path)
    return model


@pytest.fixture(scope='module')
def seg(tmp_path_factory):
    directory = tmp_path_factory.mktemp('seg')
    model = save_checkpoint(Config.fromfile(SEG_CONFIG), directory / 'train.pth', classes=('wall', 'building'))
    save_checkpoint(Config.fromfile(SEG_CONFIG), directory / 'deploy.pth', deploy=True)
    return model, directory


def exits_with(monkeypatch, capsys, code, tool, *args):
    """Run the tool, expecting exit ``code``; its stderr's last line (the error)."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(monkeypatch, tool, *args)
    assert exit_info.value.code == code
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith('error: ')
    return error


def test_exportable_adaptive_pool_equals_pytorch_at_any_size():
    generator = torch.Generator().manual_seed(0)
    for output_size in (1, 2, 3, 6, (2, 5)):
        ours, torchs = ExportableAdaptiveAvgPool2d(output_size), torch.nn.AdaptiveAvgPool2d(output_size)
        for height, width in ((1, 1), (2, 3), (4, 4), (5, 7), (13, 9), (16, 16), (33, 17)):
            x = torch.randn(2, 3, height, width, generator=generator)
            assert torch.allclose(ours(x), torchs(x), atol=1e-6), (output_size, height, width)


def test_export_segmentor_dynamic_matches_pytorch_at_other_sizes(tmp_path, monkeypatch, capsys, seg):
    model, directory = seg
    out = tmp_path / 'seg.onnx'
    # The Triton op requested in the config: the export must still use PyTorch's conv.
    run_main(monkeypatch, 'export_onnx', SEG_CONFIG, directory / 'train.pth', out, '--shape', 64, 96, '--dynamic',
             '--cfg-options', 'model.backbone.dwconv_impl=triton')
    printed = capsys.readouterr().out
    errors = [float(e) for e in re.findall(r'vs PyTorch at input .*: relative error ([0-9.e+-]+)', printed)]
    assert len(errors) == 2 and max(errors) < 1e-5  # the export size and a second one (batch 2, 104x120)
    assert 'input 2x3x104x120' in printed and 'merged 5 large-kernel convs' in printed
    assert '5 large-kernel Conv nodes (31x31 x1, 29x29 x1, 27x27 x2, 13x13 x1)' in printed
    graph = graph_summary(str(out))
    assert graph['custom_ops'] == [] and graph['large_kernels'] == SEG_KERNELS
    assert graph['input_shape'][1] == 3 and all(isinstance(graph['input_shape'][i], str) for i in (0, 2, 3))
    ops = collections.Counter(node.op_type for node in onnx.load(str(out)).graph.node)
    assert not any('triton' in op.lower() or 'depthwise' in op.lower() for op in ops)
    # Every conv of the deploy-form model is one Conv node (the 1x1 convs too, which run as matrix products).
    deployed = copy.deepcopy(model)
    deployed.backbone.switch_to_deploy()
    exported_parts = (deployed.backbone, deployed.decode_head)  # the auxiliary head is for training only
    assert ops['Conv'] == sum(isinstance(m, torch.nn.Conv2d) for part in exported_parts for m in part.modules())
    metadata = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert metadata['replk_mm.input']['mean'] == [123.675, 116.28, 103.53]
    assert metadata['replk_mm.classes'] == ['wall', 'building']
    # Independently of the tool: a third size, against the training-form model's logits.
    x = torch.randn(1, 3, 72, 136)
    (logits, ) = onnxruntime_outputs(str(out), x)
    with torch.no_grad():
        reference = model._forward(x)
    assert logits.shape == (1, 150, 18, 34) and relative_error(logits, reference) < 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ['seg.onnx']


def test_export_static_shape_from_a_deploy_checkpoint(tmp_path, monkeypatch, capsys, seg):
    model, directory = seg
    out = tmp_path / 'deploy.onnx'
    run_main(monkeypatch, 'export_onnx', SEG_CONFIG, directory / 'deploy.pth', out, '--shape', 64, 64, *DEPLOY)
    printed = capsys.readouterr().out
    assert 'merged 0 large-kernel convs' in printed and len(re.findall('vs PyTorch at input', printed)) == 1
    assert graph_summary(str(out))['input_shape'] == [1, 3, 64, 64]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's 0600


def test_export_detector_backbone_and_neck(tmp_path, monkeypatch, capsys):
    cfg = Config.fromfile(DET_CONFIG)
    model = save_checkpoint(cfg, tmp_path / 'det.pth', classes=('person', 'bicycle', 'car'))
    run_main(monkeypatch, 'export_onnx', DET_CONFIG, tmp_path / 'det.pth', tmp_path / 'det.onnx', '--shape', 96, 128)
    printed = capsys.readouterr().out
    assert 'backbone + neck feature maps' in printed and 'feat0, feat1, feat2, feat3, feat4' in printed
    x = torch.randn(1, 3, 96, 128)
    outputs = onnxruntime_outputs(str(tmp_path / 'det.onnx'), x)
    with torch.no_grad():
        reference = model.extract_feat(x)
    assert [o.shape[-2:] for o in outputs] == [(24, 32), (12, 16), (6, 8), (3, 4), (2, 2)]
    assert relative_error(outputs, list(reference)) < 1e-5
    assert graph_summary(str(tmp_path / 'det.onnx'))['large_kernels'] == ['31x31', '29x29', '27x27', '13x13']


def test_export_backbone_part_from_a_backbone_file(tmp_path, monkeypatch, capsys, seg):
    model, _ = seg
    backbone_file = tmp_path / 'backbone.pth'
    torch.save({'state_dict': model.backbone.state_dict()}, backbone_file)  # the official layout, training form
    run_main(monkeypatch, 'export_onnx', SEG_CONFIG, backbone_file, tmp_path / 'bb.onnx', '--shape', 64, 64,
             '--part', 'backbone')
    assert 'stage0, stage1, stage2, stage3' in capsys.readouterr().out
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model.backbone(x)
    assert relative_error(onnxruntime_outputs(str(tmp_path / 'bb.onnx'), x), list(reference)) < 1e-5


def test_export_above_the_tolerance_writes_nothing(tmp_path, monkeypatch, capsys, seg):
    _, directory = seg
    import replk_mm.apis.export as export
    real = export.onnxruntime_outputs
    monkeypatch.setattr(export, 'onnxruntime_outputs', lambda path, x: [o * 1.001 for o in real(path, x)])
    error = exits_with(monkeypatch, capsys, 1, 'export_onnx', SEG_CONFIG, directory / 'train.pth',
                       tmp_path / 'seg.onnx', '--shape', 64, 64)
    assert re.fullmatch(r'error: relative error 1\.0\de-03 exceeds 0.0001; nothing written', error)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_graph_fixed_to_one_size(tmp_path, monkeypatch, capsys, seg):
    _, directory = seg
    import replk_mm.apis.export as export
    # Our fast training heads left in: their resize matrices are built from Python sizes.
    monkeypatch.setattr(export, 'use_mmseg_heads', lambda module: 0)
    error = exits_with(monkeypatch, capsys, 1, 'export_onnx', SEG_CONFIG, directory / 'train.pth',
                       tmp_path / 'seg.onnx', '--shape', 64, 64, '--dynamic')
    assert error.startswith("error: asked for a dynamic graph, the exporter fixed the input axes ['H', 'W']")
    assert list(tmp_path.iterdir()) == []


def test_export_bad_input_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, seg):
    _, directory = seg
    train, deploy, out = directory / 'train.pth', directory / 'deploy.pth', tmp_path / 'out.onnx'
    # A training-form checkpoint with a deploy-form config, and the reverse.
    error = exits_with(monkeypatch, capsys, 2, 'export_onnx', SEG_CONFIG, train, out, *DEPLOY)
    assert f'error: {train} is in training form' in error and 'builds the backbone in deploy form' in error
    error = exits_with(monkeypatch, capsys, 2, 'export_onnx', SEG_CONFIG, deploy, out)
    assert f'error: {deploy} is in deploy form' in error
    assert f'{SEG_CONFIG} builds the backbone in training form' in error
    # Another model: 8 classes in the config, 150 in the checkpoint.
    error = exits_with(monkeypatch, capsys, 2, 'export_onnx', SEG_CONFIG, train, out, '--cfg-options',
                       'model.decode_head.num_classes=8')
    assert re.search(rf'{re.escape(str(train))} does not fit the model of .*: first mismatch at '
                     r'decode_head.conv_seg.weight: checkpoint \(150, 64, 1, 1\) vs model \(8, 64, 1, 1\)', error)
    # A backbone without a deploy form.
    resnet = tmp_path / 'resnet.py'
    resnet.write_text(f"_base_ = ['{SEG_CONFIG}']\nmodel = dict(backbone=dict(_delete_=True, type='ResNetV1c', "
                      'depth=18))\n')
    error = exits_with(monkeypatch, capsys, 2, 'export_onnx', resnet, train, out)
    assert error == f'error: {resnet}: model.backbone is ResNetV1c; only a RepLKNet backbone has a deploy form ' \
                    '(large kernels merged) to export'
    # Outputs that cannot be written, and an input as the output.
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    error = exits_with(monkeypatch, capsys, 2, 'export_onnx', SEG_CONFIG, train, blocker / 'out.onnx')
    assert error.startswith(f'error: cannot write to {blocker}')
    error = exits_with(monkeypatch, capsys, 2, 'export_onnx', SEG_CONFIG, train, tmp_path)
    assert error == f'error: {tmp_path} is a directory; give the path of the .onnx file to write'
    error = exits_with(monkeypatch, capsys, 2, 'export_onnx', SEG_CONFIG, train, train)
    assert error == f'error: refusing to overwrite the input {train} with the output {train}'
    error = exits_with(monkeypatch, capsys, 2, 'export_onnx', SEG_CONFIG, tmp_path / 'missing.pth', out)
    assert error == f'error: checkpoint file not found: {tmp_path / "missing.pth"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file', 'resnet.py']


def test_infer_paints_an_overlay_with_a_legend_and_writes_label_maps(tmp_path, monkeypatch, capsys, seg):
    model, directory = seg
    root = Path(make_ade20k(tmp_path / 'ade', num_train=0, num_val=3))
    images = sorted((root / 'images' / 'validation').glob('*.jpg'))
    nested = tmp_path / 'nested' / 'more'
    nested.mkdir(parents=True)
    (nested / 'copy.jpg').write_bytes(images[0].read_bytes())
    run_main(monkeypatch, 'infer', SEG_CONFIG, directory / 'train.pth', images[1], root / 'images' / 'validation',
             tmp_path / 'nested', '--out-dir', tmp_path / 'out')
    names = sorted(p.stem for p in (tmp_path / 'out' / 'vis').glob('*.png'))
    assert names == sorted([p.stem for p in images] + ['more__copy'])
    assert 'painted 4 images' in capsys.readouterr().out
    image = cv2.imread(str(images[0]))
    painted = cv2.imread(str(tmp_path / 'out' / 'vis' / f'{images[0].stem}.png'))
    labels = cv2.imread(str(tmp_path / 'out' / 'pred' / f'{images[0].stem}.png'), cv2.IMREAD_UNCHANGED)
    assert labels.shape == image.shape[:2] and painted.shape[0] >= image.shape[0]
    assert painted.shape[1] > image.shape[1] + 50  # the legend panel
    assert np.array_equal(labels, cv2.imread(str(tmp_path / 'out' / 'pred' / 'more__copy.png'), cv2.IMREAD_UNCHANGED))
    # The label map is the model's own prediction: the test pipeline by hand (resize to 256x128, keep ratio).
    resized = cv2.resize(image, (128, 128), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    mean, std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    x = ((torch.from_numpy(resized.copy()).float() - mean) / std).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = model._forward(x)
    expected = torch.nn.functional.interpolate(expected, size=image.shape[:2], mode='bilinear').argmax(1)[0]
    assert np.mean(labels == expected.numpy()) > 0.99
    overlay = painted[:image.shape[0], :image.shape[1]]
    assert not np.array_equal(overlay, image) and np.abs(overlay.astype(int) - image).mean() > 5


def test_infer_bad_input_one_line_exit_2(tmp_path, monkeypatch, capsys, seg):
    _, directory = seg
    root = Path(make_ade20k(tmp_path / 'ade', num_train=0, num_val=1))
    (image, ) = (root / 'images' / 'validation').glob('*.jpg')
    broken = tmp_path / 'broken.png'
    broken.write_text('not an image')
    out = tmp_path / 'out'
    error = exits_with(monkeypatch, capsys, 2, 'infer', SEG_CONFIG, directory / 'train.pth', tmp_path / 'no.jpg',
                       '--out-dir', out)
    assert error == f'error: input not found: {tmp_path / "no.jpg"}'
    error = exits_with(monkeypatch, capsys, 2, 'infer', SEG_CONFIG, directory / 'train.pth', broken, '--out-dir', out)
    assert error == f'error: {broken}: cannot read this file as an image (unsupported format or damaged)'
    error = exits_with(monkeypatch, capsys, 2, 'infer', SEG_CONFIG, directory / 'deploy.pth', image, '--out-dir', out)
    assert f'error: {directory / "deploy.pth"} is in deploy form' in error
    error = exits_with(monkeypatch, capsys, 2, 'infer', DET_CONFIG, directory / 'train.pth', image, '--out-dir', out)
    assert f'{directory / "train.pth"} does not fit the model of {DET_CONFIG}' in error
    error = exits_with(monkeypatch, capsys, 2, 'infer', SEG_CONFIG, directory / 'train.pth', image, '--out-dir',
                       broken / 'out')
    assert error.startswith(f'error: cannot write to {broken / "out"}')
    assert not (out / 'vis').exists() or not list((out / 'vis').iterdir())


# ---------------------------------------------------------------------------------------------- end to end


def label_maps(directory):
    return {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(Path(directory).glob('*.png'))}


@pytest.mark.slow
def test_mmseg_inferencer_and_infer_tool_match_tools_test(tmp_path):
    """Trained (tools/train.py) and re-parameterised checkpoints: MMSegInferencer, tools/infer.py and
    tools/test.py --out give the same label maps for the same images."""
    from mmseg.apis import MMSegInferencer

    from replk_mm.checkpoint import allow_mmengine_checkpoints

    root = Path(make_ade20k(tmp_path / 'ade', num_train=8, num_val=3))
    data = [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]
    check(run_tool(['tools/train.py', SEG_CONFIG, '--work-dir', tmp_path / 'work', '--cfg-options', *data,
                    'train_dataloader.batch_size=2', 'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
                    'default_hooks.checkpoint.interval=4']))
    trained = tmp_path / 'work' / 'iter_4.pth'
    check(run_tool(['tools/test.py', SEG_CONFIG, trained, '--work-dir', tmp_path / 'test', '--out', tmp_path / 'ref',
                    '--cfg-options', f'test_dataloader.dataset.data_root={root}']))
    check(run_tool(['tools/reparameterize.py', SEG_CONFIG, trained, tmp_path / 'deploy.pth']))
    # tools/test.py writes ADE20K's 1-based label values (reduce_zero_label); the models predict 0-based.
    reference = {name: labels.astype(int) - 1 for name, labels in label_maps(tmp_path / 'ref').items()}
    assert len(reference) == 3 and len(np.unique(np.concatenate([m.ravel() for m in reference.values()]))) > 1

    images = root / 'images' / 'validation'
    allow_mmengine_checkpoints()  # training checkpoints carry mmengine's message hub
    for config, checkpoint in ((SEG_CONFIG, trained), (tmp_path / 'deploy.py', tmp_path / 'deploy.pth')):
        inferencer = MMSegInferencer(model=str(config), weights=str(checkpoint), device='cpu')
        paths = sorted(str(p) for p in images.glob('*.jpg'))
        result = inferencer(paths, out_dir=str(tmp_path / f'mmseg_{Path(checkpoint).stem}'))
        for path, labels in zip(paths, result['predictions']):
            assert np.array_equal(labels, reference[Path(path).stem])
            painted = cv2.imread(str(tmp_path / f'mmseg_{Path(checkpoint).stem}' / 'vis' / Path(path).name))
            assert painted.shape == cv2.imread(path).shape
        out_dir = tmp_path / f'infer_{Path(checkpoint).stem}'
        check(run_tool(['tools/infer.py', config, checkpoint, images, '--out-dir', out_dir]))
        predicted = label_maps(out_dir / 'pred')
        assert predicted.keys() == reference.keys()
        assert all(np.array_equal(predicted[name], reference[name]) for name in reference)


@pytest.mark.slow
def test_det_inferencer_and_infer_tool_match_tools_test(tmp_path):
    """The tiny Cascade Mask R-CNN: DetInferencer's (training and deploy form) and tools/infer.py's boxes equal
    tools/test.py's."""
    from mmdet.apis import DetInferencer

    root = Path(make_coco(tmp_path / 'coco', num_train=1, num_val=2))
    cfg = Config.fromfile(DET_CONFIG)
    save_checkpoint(cfg, tmp_path / 'det.pth', classes=('person', 'bicycle', 'car'))
    ann_file = f'{root}/annotations/instances_val2017.json'
    check(run_tool(['tools/test.py', DET_CONFIG, tmp_path / 'det.pth', '--work-dir', tmp_path / 'test', '--out',
                    tmp_path / 'ref.pkl', '--cfg-options', f'test_dataloader.dataset.data_root={root}/',
                    f'test_evaluator.ann_file={ann_file}']))
    with open(tmp_path / 'ref.pkl', 'rb') as f:
        reference = {Path(r['img_path']).name: r['pred_instances'] for r in pickle.load(f)}
    assert len(reference) == 2 and all(len(r['bboxes']) > 0 for r in reference.values())

    check(run_tool(['tools/reparameterize.py', DET_CONFIG, tmp_path / 'det.pth', tmp_path / 'deploy.pth']))
    for config, checkpoint in ((DET_CONFIG, tmp_path / 'det.pth'), (tmp_path / 'deploy.py', tmp_path / 'deploy.pth')):
        inferencer = DetInferencer(model=str(config), weights=str(checkpoint), device='cpu')
        out_dir = tmp_path / f'mmdet_{checkpoint.stem}'
        for name, expected in reference.items():
            path = str(root / 'val2017' / name)
            (sample, ) = inferencer(path, return_datasamples=True, out_dir=str(out_dir))['predictions']
            assert torch.allclose(sample.pred_instances.bboxes, expected['bboxes'], atol=1e-3)
            assert torch.equal(sample.pred_instances.labels, expected['labels'])
            assert cv2.imread(str(out_dir / 'vis' / name)).shape == cv2.imread(path).shape

    check(run_tool(['tools/infer.py', DET_CONFIG, tmp_path / 'det.pth', root / 'val2017', '--out-dir',
                    tmp_path / 'infer', '--score-thr', 0]))
    for name, expected in reference.items():
        result = json.loads((tmp_path / 'infer' / 'pred' / f'{Path(name).stem}.json').read_text())
        assert np.allclose(result['bboxes'], expected['bboxes'].numpy(), atol=1e-3)
        assert result['class_names'] == [('person', 'bicycle', 'car')[i] for i in expected['labels'].tolist()]
        assert len(result['masks']) == len(result['bboxes'])
        assert (tmp_path / 'infer' / 'vis' / f'{Path(name).stem}.png').is_file()
