"""Builds RepLKNet-31B and prints its parameter count and output shapes for a 512x512 image."""
import torch

from replk_mm import RepLKNet


def main():
    model = RepLKNet(arch='31B').eval()
    params = sum(p.numel() for p in model.parameters())
    print(f'RepLKNet-31B backbone: {params:,} parameters')
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 512, 512))
    for stride, out in zip((4, 8, 16, 32), outs):
        print(f'  stride {stride:2d}: {tuple(out.shape)}')


if __name__ == '__main__':
    main()
