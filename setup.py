"""replk_mm: RepLKNet for OpenMMLab 2.x dense prediction (mmsegmentation, mmdetection).

mmcv 2.1.0 with compiled ops has no wheel for a current torch: `tools/install.sh` builds it from
source first (it needs torch installed and no build isolation), then installs this package.
"""
from setuptools import find_packages, setup

setup(
    name='replk_mm',
    version='0.1.0',
    description='RepLKNet (31x31 depthwise kernels) as an OpenMMLab 2.x backbone for segmentation and detection',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['replk_mm', 'replk_mm.*']),
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.1',
        'mmengine==0.10.7',
        'mmcv==2.1.0',
        'mmsegmentation==1.2.2',
        'mmdet==3.3.0',
        # Imported by mmseg/mmdet but not declared by them.
        'ftfy',
        'regex',
        'pycocotools',
        'shapely',
        'terminaltables',
        'prettytable',
        'scipy',
        'matplotlib',
        'tqdm',
    ],
    # triton runs the depthwise kernels' CPU tests in its interpreter; with a CUDA torch, its own pin wins.
    # onnx, onnxruntime, onnxscript (torch.export-based exporter): tools/export_onnx.py and its tests.
    extras_require={'tests': ['pytest', 'pytest-timeout', 'onnx', 'onnxruntime', 'onnxscript', 'ruff',
                              'triton; platform_system == "Linux"']},
    zip_safe=False,
)
