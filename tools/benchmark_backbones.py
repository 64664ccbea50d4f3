"""Classification-style throughput of RepLKNet against other backbones on one GPU.

The setting of the paper's speed claim and of REPLKNET.md's H100 anchors: 224x224 images, batch
64, bf16 autocast; inference (no grad) and a training step (forward, backward, SGD step), in
images/s. RepLKNet gets its classifier (BN, global pooling, linear), so it is the same model as
the released ImageNet one; other models come from timm when it is installed.

    python tools/benchmark_backbones.py --models replknet31b replknet31b_torch replknet31b_deploy swin_base \\
        convnext_base
"""
import argparse
import json
import statistics
import sys

import torch
import torch.nn as nn

from replk_mm import RepLKNet
from replk_mm.apis import time_call

TIMM_NAMES = {'swin_base': 'swin_base_patch4_window7_224', 'convnext_base': 'convnext_base'}


class RepLKNetClassifier(nn.Module):
    """The released ImageNet model: backbone, BN on the last stage, global average pooling, linear."""

    def __init__(self, arch='31B', num_classes=1000, **kwargs):
        super().__init__()
        self.backbone = RepLKNet(arch=arch, out_indices=(3, ), drop_path_rate=0.0, **kwargs)
        channels = self.backbone.channels[-1]
        self.norm = nn.BatchNorm2d(channels)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.norm(self.backbone(x)[-1])
        return self.head(x.mean((2, 3)))


def build(name):
    if name.startswith('replknet31b'):
        impl = 'torch' if name.endswith('_torch') else 'auto'
        model = RepLKNetClassifier('31B', dwconv_impl=impl)
        if 'deploy' in name:
            model.eval()
            model.backbone.switch_to_deploy()
        return model
    import timm
    return timm.create_model(TIMM_NAMES[name], pretrained=False)


def images_per_s(fn, batch, warmup, repeats):
    """Images per second of ``fn`` (one batch a call), from the median of ``repeats`` timed calls."""
    return batch / statistics.median(time_call(fn, 'cuda', warmup, repeats))


def benchmark(name, batch, size, warmup, repeats, train):
    model = build(name).cuda()
    images = torch.randn(batch, 3, size, size, device='cuda')
    targets = torch.randint(0, 1000, (batch, ), device='cuda')
    result = {}
    model.eval()
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
        result['infer_img_s'] = images_per_s(lambda: model(images), batch, warmup, repeats)
    if train and 'deploy' not in name:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            with torch.autocast('cuda', dtype=torch.bfloat16):
                loss = nn.functional.cross_entropy(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        result['train_img_s'] = images_per_s(step, batch, warmup, repeats)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='+', default=['replknet31b', 'replknet31b_torch', 'replknet31b_deploy',
                                                        'swin_base', 'convnext_base'])
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--no-train', action='store_true', help='time inference only')
    parser.add_argument('--out', help='write the results as JSON here')
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit('error: benchmark_backbones.py needs a CUDA GPU')
    torch.backends.cudnn.benchmark = True
    results = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, batch=args.batch_size,
                   size=args.size, dtype='bf16 autocast', models={})
    for name in args.models:
        results['models'][name] = benchmark(name, args.batch_size, args.size, args.warmup, args.repeats,
                                            not args.no_train)
        torch.cuda.empty_cache()  # the model is gone with benchmark(): give its memory back before the next
        print(name, {k: round(v, 1) for k, v in results['models'][name].items()}, flush=True)
    print(f"\n{'model':24s} {'infer img/s':>12s} {'train img/s':>12s}")
    for name, numbers in results['models'].items():
        print(f"{name:24s} {numbers['infer_img_s']:12.1f} {numbers.get('train_img_s', float('nan')):12.1f}")
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)


if __name__ == '__main__':
    main()
