"""Effective receptive field (ERF) of any MM backbone, measured as in the RepLKNet paper.

Ding et al. (CVPR 2022, Sec. 5 and the released ``erf/`` scripts): for each image, the centre pixel of a
stage's output, ReLU'd and summed over channels, is backpropagated to the input; the positive part of the
input gradient, summed over input channels, is that image's contribution map, averaged over the images.
For reading and for the "high-contribution area ratio" the paper rescales the mean map to
``log10(x + 1) / max`` and reports, for 20/30/50/99%, the smallest centred square that holds that fraction
of the total. Both that log-scaled ratio and the same ratio on the linear map are reported here.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from tqdm import tqdm

from replk_mm.apis import build_backbone, load_config
from replk_mm.apis.inference import read_image

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
# mmseg/mmdet/mmpretrain's ImageNet statistics (RGB, 0-255): the usual fallback for a config without them.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
GRAD_MODES = ('relu', 'abs')
SAMPLE_PHOTO = 'grace_hopper.jpg'
CMAP = 'RdYlGn'  # the paper's heat-map colours


def input_normalization(cfg):
    """(mean, std, swap_channels) as the config's data preprocessor applies them to BGR-loaded images.

    mmseg/mmdet keep it under ``model.data_preprocessor``, mmpretrain at the top level; without one,
    ImageNet statistics on RGB.
    """
    pre = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    if pre.get('mean') is None or pre.get('std') is None:
        return IMAGENET_MEAN, IMAGENET_STD, True
    swap = any(pre.get(key, False) for key in ('bgr_to_rgb', 'rgb_to_bgr', 'to_rgb'))
    return tuple(pre['mean']), tuple(pre['std']), swap


def to_input(image, size, mean, std, swap_channels, device='cpu'):
    """A BGR uint8 image -> a normalised (1, 3, size, size) channels-last tensor that records its gradient."""
    img = cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    if swap_channels:
        img = img[..., ::-1]
    img = (img - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].to(device)
    return tensor.contiguous(memory_format=torch.channels_last).requires_grad_()


def folder_images(folder, count):
    """The first ``count`` jpg/png files of ``folder`` in name order."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise FileNotFoundError(f'no {"/".join(IMAGE_EXTENSIONS)} images in {folder}')
    return paths[:count]


def one_over_f_image(rng, size=512):
    """A colour image with random phases and the 1/f amplitude spectrum of natural photographs."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    amplitude = 1 / np.maximum(np.hypot(fy, fx), 1 / size)
    amplitude[0, 0] = 0

    def field():
        phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
        return np.fft.irfft2(amplitude * np.exp(1j * phase), s=(size, size))

    luminance = field()  # shared by the channels, as colours in photographs are correlated
    image = np.stack([luminance + 0.4 * field() for _ in range(3)], axis=-1)
    image = (image - image.mean()) / image.std()
    return np.clip(128 + 48 * image, 0, 255).astype(np.uint8)


def builtin_images(count, seed=0):
    """matplotlib's sample photograph, then synthetic 1/f images: no download, the same every run."""
    from matplotlib import cbook
    rng = np.random.default_rng(seed)
    photo = Path(cbook.get_sample_data(SAMPLE_PHOTO, asfileobj=False))
    return [photo, *(one_over_f_image(rng) for _ in range(count - 1))][:count]


def input_contribution(backbone, x, stage=-1, grad_mode='relu'):
    """(H, W) contribution of each input pixel to the centre of output ``stage`` (an index into outputs)."""
    out = backbone(x)
    if isinstance(out, (list, tuple)):
        if not -len(out) <= stage < len(out):
            raise IndexError(f'stage {stage}: the backbone returns {len(out)} outputs (its out_indices)')
        out = out[stage]
    height, width = out.shape[-2:]
    centre = F.relu(out[:, :, height // 2, width // 2]).sum()
    grad, = torch.autograd.grad(centre, x)
    grad = F.relu(grad) if grad_mode == 'relu' else grad.abs()
    return grad.sum((0, 1))


def compute_erf(backbone, images, size=1024, normalization=(IMAGENET_MEAN, IMAGENET_STD, True), stage=-1,
                grad_mode='relu', device='cpu', desc=None):
    """Mean contribution map over ``images`` (paths or BGR arrays), and how many were finite and used."""
    if grad_mode not in GRAD_MODES:
        raise ValueError(f'grad_mode must be one of {GRAD_MODES}, got {grad_mode!r}')
    total = torch.zeros(size, size, dtype=torch.float64, device=device)
    used = 0
    for item in tqdm(images, desc=desc, unit='img'):
        image = item if isinstance(item, np.ndarray) else read_image(item)  # a generated image, or a file
        x = to_input(image, size, *normalization, device=device)
        contribution = input_contribution(backbone, x, stage, grad_mode)
        if torch.isfinite(contribution).all():  # the paper skips images whose gradient overflowed
            total += contribution
            used += 1
    if not used:
        raise RuntimeError('every image gave a non-finite gradient')
    return (total / used).cpu().numpy(), used


def log_scaled(erf):
    """The paper's view of a map: log10(x + 1), divided by its maximum."""
    data = np.log10(erf + 1)
    return data / data.max()


def centred_square(data, threshold):
    """(side, area ratio) of the smallest square around the centre holding more than ``threshold`` of the sum.

    Squares grow by one pixel a side from the centre pixel (as the paper's, which starts at 3x3) and are
    clipped to the map, so the largest is the whole map.
    """
    height, width = data.shape
    integral = np.pad(np.asarray(data, np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    radii = np.arange(max(height, width) // 2 + 1)
    y0, y1 = np.clip(height // 2 - radii, 0, height), np.clip(height // 2 + radii + 1, 0, height)
    x0, x1 = np.clip(width // 2 - radii, 0, width), np.clip(width // 2 + radii + 1, 0, width)
    fractions = (integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]) / integral[-1, -1]
    above = np.flatnonzero(fractions > threshold)
    i = above[0] if above.size else len(radii) - 1
    side = max(int(y1[i] - y0[i]), int(x1[i] - x0[i]))
    return side, float((y1[i] - y0[i]) * (x1[i] - x0[i]) / (height * width))


def area_ratios(data, thresholds=THRESHOLDS):
    """{'50%': {'side': ..., 'area_ratio': ...}, ...} for each threshold."""
    ratios = {}
    for threshold in thresholds:
        side, ratio = centred_square(data, threshold)
        ratios[f'{threshold:.0%}'] = dict(side=side, area_ratio=ratio)
    return ratios


def plot_erf(ax, erf, title):
    """One log-scaled heat map panel; returns the image for a colour bar."""
    data = log_scaled(erf)
    image = ax.imshow(data, cmap=CMAP, vmin=0, vmax=1, interpolation='nearest')
    ratios = area_ratios(data)
    ax.set_title(title, fontsize=10)
    shown = ', '.join(f'{k}: {100 * ratios[k]["area_ratio"]:.3g}%' for k in ('20%', '50%', '99%'))
    ax.set_xlabel(f'area ratio {shown}', fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def save_figure(panels, path):
    """Heat maps side by side with one colour bar; ``panels`` is a list of (title, erf map)."""
    fig = Figure(figsize=(4 * len(panels) + 0.8, 4.6))  # no pyplot: the caller's matplotlib backend is untouched
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, erf) in zip(axes[0], panels):
        image = plot_erf(ax, erf, title)
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.05 / len(panels), pad=0.02,
                 label='log10(contribution + 1) / max')
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches='tight')


def analyze_config(config, images, out_dir, name=None, checkpoint=None, size=1024, stage=-1, grad_mode='relu',
                   device='cpu', scope=None, seed=0):
    """Everything for one config: writes ``name``.npy (mean map), .png (heat map), .json; returns both.

    ``seed`` fixes the random initialisation, so that a figure of random-init backbones can be remade.
    """
    cfg = load_config(config)
    name = name or Path(config.split('::')[-1]).stem
    torch.manual_seed(seed)
    # channels_last: PyTorch's CPU depthwise convs with large kernels run about 10x faster in it.
    backbone = build_backbone(cfg, checkpoint, scope).to(device, memory_format=torch.channels_last)
    normalization = input_normalization(cfg)
    erf, used = compute_erf(backbone, images, size, normalization, stage, grad_mode, device, desc=name)
    summary = dict(
        config=config, backbone=type(backbone).__name__, checkpoint=checkpoint, seed=seed, stage=stage, size=size,
        num_images=used, grad_mode=grad_mode, device=str(device),
        normalization=dict(zip(('mean', 'std', 'swap_channels'), normalization)),
        area_ratio_log_scaled=area_ratios(log_scaled(erf)), area_ratio_linear=area_ratios(erf))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / f'{name}.npy', erf)
    save_figure([(f'{name}\n{summary["backbone"]}', erf)], out_dir / f'{name}.png')
    (out_dir / f'{name}.json').write_text(json.dumps(summary, indent=2) + '\n')
    return erf, summary
