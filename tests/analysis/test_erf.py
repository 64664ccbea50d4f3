"""Effective receptive field analysis: its statistic, inputs, checkpoints, large vs small kernels, the tool."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from replk_mm import RepLKNet
from replk_mm.analysis import area_ratios, builtin_images, centred_square, compute_erf, input_normalization, log_scaled
from replk_mm.analysis.erf import IMAGENET_MEAN, IMAGENET_STD, one_over_f_image, to_input
from replk_mm.apis import build_backbone, load_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOOL = PROJECT_ROOT / 'tools' / 'analyze_erf.py'
TINY_CONFIG = str(PROJECT_ROOT / 'configs' / 'upernet_replknet_tiny_synthetic_ade20k.py')
RESNET18_CONFIG = """
default_scope = 'mmseg'
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(type='ResNetV1c', depth=18, norm_cfg=dict(type='SyncBN', requires_grad=True)))
"""


@pytest.fixture
def resnet18_config(tmp_path):
    path = tmp_path / 'resnet18_v1c.py'
    path.write_text(RESNET18_CONFIG)
    return str(path)


def load_tool():
    spec = importlib.util.spec_from_file_location('analyze_erf', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_centred_square_on_known_maps():
    uniform = np.ones((9, 9))
    assert [centred_square(uniform, t) for t in (0.2, 0.3, 0.5, 0.99)] == [
        (5, 25 / 81), (5, 25 / 81), (7, 49 / 81), (9, 1.0)]
    point = np.zeros((9, 9))
    point[4, 4] = 3.0
    assert centred_square(point, 0.99) == (1, 1 / 81)
    # Even side: squares grow around pixel (4, 4) and the last one is clipped to the whole 8x8 map.
    assert area_ratios(np.ones((8, 8))) == {
        '20%': dict(side=5, area_ratio=25 / 64), '30%': dict(side=5, area_ratio=25 / 64),
        '50%': dict(side=7, area_ratio=49 / 64), '99%': dict(side=8, area_ratio=1.0)}


def test_log_scaled_is_the_papers_rescaling():
    np.testing.assert_allclose(log_scaled(np.array([[0., 9.], [99., 999.]])), [[0, 1 / 3], [2 / 3, 1]])


def test_inputs_are_normalised_as_the_config_says():
    image = np.empty((16, 16, 3), np.uint8)
    image[...] = (10, 20, 30)  # BGR, as mm loaders read images
    rgb = Config(dict(model=dict(data_preprocessor=dict(mean=[1, 2, 3], std=[2, 4, 6], bgr_to_rgb=True))))
    assert input_normalization(rgb) == ((1, 2, 3), (2, 4, 6), True)
    x = to_input(image, 8, *input_normalization(rgb))
    assert x.shape == (1, 3, 8, 8) and x.requires_grad and x.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(x[0, :, 3, 5].detach().numpy(), [(30 - 1) / 2, (20 - 2) / 4, (10 - 3) / 6],
                               rtol=1e-6)
    bgr = Config(dict(model=dict(data_preprocessor=dict(mean=[1, 2, 3], std=[2, 4, 6], bgr_to_rgb=False))))
    np.testing.assert_allclose(to_input(image, 8, *input_normalization(bgr))[0, :, 0, 0].detach().numpy(),
                               [(10 - 1) / 2, (20 - 2) / 4, (30 - 3) / 6], rtol=1e-6)
    assert input_normalization(Config(dict(model=dict()))) == (IMAGENET_MEAN, IMAGENET_STD, True)


def test_builtin_images_are_a_photo_and_natural_spectrum_noise():
    images = builtin_images(3)
    assert images[0].name == 'grace_hopper.jpg' and cv2.imread(str(images[0])).shape == (600, 512, 3)
    assert all(img.dtype == np.uint8 and img.shape == (512, 512, 3) for img in images[1:])
    assert not np.array_equal(images[1], images[2])
    np.testing.assert_array_equal(builtin_images(3)[2], images[2])  # the same every run
    # Radially averaged power falls as 1/f^2, as in photographs.
    gray = images[1].astype(np.float64).mean(-1)
    power = np.abs(np.fft.fft2(gray - gray.mean())) ** 2
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(512), np.fft.fftfreq(512), indexing='ij'))
    bands = np.geomspace(4 / 512, 0.25, 9)
    band_power = [power[(freq >= lo) & (freq < hi)].mean() for lo, hi in zip(bands[:-1], bands[1:])]
    slope = np.polyfit(np.log(np.sqrt(bands[:-1] * bands[1:])), np.log(band_power), 1)[0]
    assert -2.2 < slope < -1.8


def tiny_replknet(kernel, small_kernel):
    torch.manual_seed(0)
    arch = dict(large_kernel_sizes=[kernel] * 4, layers=[1, 1, 2, 1], channels=[8, 16, 24, 32],
                small_kernel=small_kernel, dw_ratio=1)
    return RepLKNet(arch=arch, drop_path_rate=0.0).eval().requires_grad_(False)


def test_large_kernels_give_a_larger_erf():
    """Same random tiny net, 31x31 vs 3x3 depthwise kernels, stage 0 (stride 4) on 128 px images.

    At 128 px the last stage's theoretical receptive field covers the whole image with either kernel,
    so the first stage is where the kernel size decides. Measured: 50% 18.5% vs 0.5%, 99% 98.4% vs 2.2%.
    """
    images = builtin_images(3)
    ratios = {}
    for kernel, small_kernel in ((31, 3), (3, None)):
        erf, used = compute_erf(tiny_replknet(kernel, small_kernel), images, size=128, stage=0)
        assert used == 3 and erf.shape == (128, 128)
        ratios[kernel] = {k: v['area_ratio'] for k, v in area_ratios(log_scaled(erf)).items()}
    assert ratios[31]['50%'] > 0.15 and ratios[3]['50%'] < 0.01
    assert ratios[31]['99%'] > 0.9 and ratios[3]['99%'] < 0.05


def randomize(model):
    """Weights and BN statistics unlike any initialisation, so that loading them is really tested."""
    generator = torch.Generator().manual_seed(1)
    for name, tensor in model.state_dict().items():
        if 'running_var' in name or name.endswith('bn.weight'):
            tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
        elif tensor.is_floating_point():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.05)
    return model


def test_replknet_checkpoints_of_either_form_load(tmp_path):
    """A whole segmentor checkpoint in training form (``backbone.*`` beside head keys) and a deploy-form
    backbone file both give the source network's outputs (the ERF backbone is merged to deploy form)."""
    cfg = load_config(TINY_CONFIG)
    source = randomize(build_backbone(cfg))
    x = torch.randn(1, 3, 64, 64)
    expected = source(x)
    whole = dict(meta=dict(iter=2), state_dict={**{f'backbone.{k}': v for k, v in source.state_dict().items()},
                                                'decode_head.conv_seg.weight': torch.zeros(2)})
    torch.save(whole, tmp_path / 'segmentor.pth')
    source.switch_to_deploy()
    torch.save(source.state_dict(), tmp_path / 'deploy.pth')
    for name in ('segmentor.pth', 'deploy.pth'):
        loaded = build_backbone(cfg, checkpoint=str(tmp_path / name))
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
        for out, ref in zip(loaded(x), expected):
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_other_backbones_load_a_state_dict(tmp_path, resnet18_config):
    cfg = load_config(resnet18_config)
    source = randomize(build_backbone(cfg))
    torch.save(source.state_dict(), tmp_path / 'resnet18.pth')
    loaded = build_backbone(cfg, checkpoint=str(tmp_path / 'resnet18.pth'))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    torch.save({'state_dict': {'encoder.conv.weight': torch.zeros(3)}}, tmp_path / 'other.pth')
    with pytest.raises(ValueError, match='its 1 backbone tensors match no parameter of ResNetV1c'):
        build_backbone(cfg, checkpoint=str(tmp_path / 'other.pth'))


def test_mmdet_backbone_builds_in_its_scope_without_its_pretrained_file(tmp_path):
    """mmdet's ResNet (not mmseg's), caffe-style BGR statistics, an init_cfg that would download: dropped."""
    config = tmp_path / 'faster_rcnn_r18.py'
    config.write_text("""
default_scope = 'mmdet'
model = dict(
    type='FasterRCNN',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0],
                           bgr_to_rgb=False),
    backbone=dict(type='ResNet', depth=18, out_indices=(1, 2, 3),
                  init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')))
""")
    cfg = load_config(str(config))
    backbone = build_backbone(cfg)
    assert type(backbone).__module__ == 'mmdet.models.backbones.resnet'
    assert input_normalization(cfg) == ((103.53, 116.28, 123.675), (1.0, 1.0, 1.0), False)
    erf, used = compute_erf(backbone, builtin_images(2), size=64, normalization=input_normalization(cfg), stage=0)
    ratios = [v['area_ratio'] for v in area_ratios(erf).values()]
    assert used == 2 and 0 < ratios[0] < 0.1 and ratios == sorted(ratios) and ratios[-1] > 0.5


def test_package_configs_resolve_without_network():
    assert load_config('mmseg::_base_/models/upernet_r50.py').model.backbone.type == 'ResNetV1c'
    with pytest.raises(FileNotFoundError, match="'mm_no_such_package' is not installed"):
        load_config('mm_no_such_package::models/x.py')


def test_tool_announces_the_builtin_set_and_checks_checkpoints(tmp_path, capsys):
    tool = load_tool()
    tool.main([TINY_CONFIG, '--num-images', '2', '--size', '64', '--out-dir', str(tmp_path), '--device', 'cpu'])
    out = capsys.readouterr().out
    assert 'no --images given: using the built-in set' in out and 'grace_hopper.jpg and 1 synthetic' in out
    assert json.loads((tmp_path / 'upernet_replknet_tiny_synthetic_ade20k.json').read_text())['num_images'] == 2
    with pytest.raises(SystemExit):
        tool.parse_args([TINY_CONFIG, TINY_CONFIG, '--checkpoints', 'a.pth'])
    assert tool.unique_names(['a/x.py', 'b/x.py', 'mmseg::m/y.py']) == ['x', 'x_2', 'y']


def test_tool_on_two_configs_writes_readable_outputs(tmp_path, resnet18_config):
    """The tool as a user runs it: a RepLKNet config and an mmseg ResNet one, 4 images of 128 px."""
    image_dir = tmp_path / 'images'
    image_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(image_dir / f'{i}.png'), one_over_f_image(rng, 128))
    out_dir = tmp_path / 'out'
    result = subprocess.run(
        [sys.executable, str(TOOL), TINY_CONFIG, resnet18_config, '--images', str(image_dir), '--size', '128',
         '--out-dir', str(out_dir), '--device', 'cpu'],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'using 4 images from {image_dir}' in result.stdout
    for name, backbone in (('upernet_replknet_tiny_synthetic_ade20k', 'RepLKNet'), ('resnet18_v1c', 'ResNetV1c')):
        erf = np.load(out_dir / f'{name}.npy')
        assert erf.shape == (128, 128) and np.isfinite(erf).all() and erf.min() >= 0 and erf.max() > 0
        heat_map = cv2.imread(str(out_dir / f'{name}.png'))
        assert heat_map.ndim == 3 and min(heat_map.shape[:2]) > 200
        summary = json.loads((out_dir / f'{name}.json').read_text())
        assert (summary['backbone'], summary['num_images'], summary['size']) == (backbone, 4, 128)
        for scale in ('area_ratio_log_scaled', 'area_ratio_linear'):
            ratios = [summary[scale][k]['area_ratio'] for k in ('20%', '30%', '50%', '99%')]
            assert all(0 < r <= 1 for r in ratios) and ratios == sorted(ratios) and ratios[0] < ratios[-1]
            assert all(summary[scale][k]['side'] <= 128 for k in summary[scale])
    figure = cv2.imread(str(out_dir / 'erf_compare.png'))
    assert figure.shape[1] > 1.5 * figure.shape[0]
