"""Loading released RepLKNet weights: every file layout, both forms, arch mismatches, and the log.

Files are real: random models saved in the official / mmpretrain / mmengine layouts in tmp dirs.
"""
import logging

import pytest
import torch
from mmengine.logging import MMLogger

from replk_mm import RepLKNet
from replk_mm.checkpoint import load_pretrained

from conftest import TINY_ARCH, randomize_bn_stats, read_key_list

XL_LIKE_ARCH = dict(TINY_ARCH, small_kernel=None, dw_ratio=1.5)



def source_model(arch=TINY_ARCH, deploy=False, seed=0):
    torch.manual_seed(seed)
    model = randomize_bn_stats(RepLKNet(arch=arch, dwconv_impl='torch'), seed)
    if deploy:
        model.switch_to_deploy()
    return model.eval()


def official_state(model, num_classes=1000):
    """The model's weights plus an ImageNet classifier (``norm.*``, ``head.*``), as the official files hold."""
    state = dict(model.state_dict())
    channels = model.channels[-1]
    state.update({'norm.weight': torch.rand(channels), 'norm.bias': torch.rand(channels),
                  'norm.running_mean': torch.rand(channels), 'norm.running_var': torch.rand(channels) + 0.5,
                  'norm.num_batches_tracked': torch.tensor(7),
                  'head.weight': torch.randn(num_classes, channels), 'head.bias': torch.randn(num_classes)})
    return state


def mmpretrain_state(model):
    """What mmpretrain's replknet_to_mmpretrain converter writes: backbone.*, classifier norm as stage-3 norm."""
    state = {f'backbone.{k}': v for k, v in official_state(model).items() if not k.startswith(('norm.', 'head.'))}
    for key, value in official_state(model).items():
        if key.startswith('norm.'):
            state[f'backbone.stages.3.{key}'] = value
        elif key.startswith('head.'):
            state[key.replace('head.', 'head.fc.')] = value
    return state


def save(tmp_path, obj, name='ckpt.pth'):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def outputs(model, size=64):
    with torch.no_grad():
        return model.eval()(torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1)))


def assert_same_outputs(model, reference, tol=1e-5):
    for out, ref in zip(outputs(model), outputs(reference)):
        assert ((out - ref).norm() / ref.norm()).item() < tol


@pytest.fixture
def log_messages():
    """Messages the loader logs through mmengine's current logger (MMLogger need not propagate to root)."""
    records = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield lambda: [record.getMessage() for record in records]
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.mark.parametrize('wrap', [None, 'model', 'state_dict'])
def test_official_file_loads_flat_or_wrapped(tmp_path, wrap, log_messages):
    source = source_model()
    state = official_state(source)
    path = save(tmp_path, state if wrap is None else {wrap: state, 'epoch': 300})
    model = RepLKNet(arch=TINY_ARCH, dwconv_impl='torch')
    report = load_pretrained(model, path)
    assert sorted(report['ignored']) == sorted(k for k in state if k.startswith(('norm.', 'head.')))
    assert report['missing'] == []
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert_same_outputs(model, source, tol=1e-7)
    messages = log_messages()
    assert f'loaded {len(source.state_dict())} tensors into RepLKNet' in messages[0]
    assert any(m.startswith(f'ignored 7 keys of {path}: ImageNet classifier (norm and head, 1000 classes): '
                            'norm.weight, norm.bias') for m in messages)


def test_init_cfg_pretrained_routes_to_the_loader(tmp_path):
    source = source_model()
    path = save(tmp_path, official_state(source))
    model = RepLKNet(arch=TINY_ARCH, dwconv_impl='torch', init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    assert_same_outputs(model, source, tol=1e-7)


def test_mmpretrain_file_drops_head_fc_and_the_classifier_norm(tmp_path, log_messages):
    source = source_model()
    path = save(tmp_path, mmpretrain_state(source))
    # With stage norms, backbone.stages.3.norm must not be taken for the stage-3 output norm.
    model = RepLKNet(arch=TINY_ARCH, dwconv_impl='torch', norm_intermediate_features=True)
    report = load_pretrained(model, path)
    assert set(report['ignored']) == {'head.fc.weight', 'head.fc.bias'} | {
        f'backbone.stages.3.norm.{n}' for n in ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')}
    assert 'mmpretrain' in report['ignored']['backbone.stages.3.norm.weight']
    assert torch.equal(model.stages[3].norm.weight, torch.ones(TINY_ARCH['channels'][3]))
    assert len(report['missing']) == 4 * 5 and all('.norm.' in k for k in report['missing'])
    assert any('left as initialised: stages.0.norm.weight' in m for m in log_messages())
    plain = RepLKNet(arch=TINY_ARCH, dwconv_impl='torch')
    assert load_pretrained(plain, path)['missing'] == []
    assert_same_outputs(plain, source, tol=1e-7)


def test_22k_file_ignores_its_21841_class_head(tmp_path, log_messages):
    source = source_model()
    path = save(tmp_path, {'model': official_state(source, num_classes=21841)})
    model = RepLKNet(arch=TINY_ARCH, dwconv_impl='torch')
    report = load_pretrained(model, path)
    assert report['ignored']['head.weight'] == 'ImageNet classifier (norm and head, 21841 classes)'
    assert_same_outputs(model, source, tol=1e-7)
    assert any('21841 classes' in m for m in log_messages())


def test_whole_segmentor_checkpoint_loads_its_backbone(tmp_path):
    source = source_model()
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state['decode_head.conv_seg.weight'] = torch.randn(150, 64, 1, 1)
    path = save(tmp_path, {'meta': {'iter': 4}, 'state_dict': state})
    model = RepLKNet(arch=TINY_ARCH, dwconv_impl='torch')
    report = load_pretrained(model, path)
    assert report['ignored'] == {'decode_head.conv_seg.weight': 'not part of the backbone (classifier, neck or head)'}
    assert_same_outputs(model, source, tol=1e-7)


@pytest.mark.parametrize('arch', [TINY_ARCH, XL_LIKE_ARCH])
@pytest.mark.parametrize('file_form, model_form', [('train', 'train'), ('train', 'deploy'), ('deploy', 'deploy')])
def test_forms_load_with_equal_outputs(tmp_path, arch, file_form, model_form):
    training = source_model(arch)
    source = source_model(arch, deploy=file_form == 'deploy')
    path = save(tmp_path, official_state(source))
    model = RepLKNet(arch=arch, dwconv_impl='torch', small_kernel_merged=model_form == 'deploy')
    report = load_pretrained(model, path)
    assert report['missing'] == []
    assert_same_outputs(model, training)


def test_deploy_file_into_training_backbone_says_what_to_do(tmp_path):
    path = save(tmp_path, official_state(source_model(deploy=True)))
    with pytest.raises(ValueError, match=r'deploy form .* small_kernel_merged=True .*'
                                         r'--cfg-options model\.backbone\.small_kernel_merged=True'):
        load_pretrained(RepLKNet(arch=TINY_ARCH), path)


def test_31l_into_31b_names_both_archs_and_the_first_mismatch(tmp_path):
    large, base = RepLKNet(arch='31L'), RepLKNet(arch='31B')
    state = {k: torch.zeros(()).expand(v.shape) for k, v in official_state(large).items()}  # 1-element storage
    path = save(tmp_path, state)
    expected = (r'holds RepLKNet arch 31L, but the backbone is arch 31B: first mismatch at stem\.0\.conv\.weight: '
                r'checkpoint \(192, 3, 3, 3\) vs backbone \(128, 3, 3, 3\)')
    with pytest.raises(ValueError, match=expected):
        load_pretrained(base, path)


@pytest.mark.parametrize('file_arch, model_arch, key, theirs, ours', [
    (dict(TINY_ARCH, layers=[1, 1, 3, 1]), TINY_ARCH, 'stages.2.blocks.4.pw1.conv.weight', r'\(24, 24, 1, 1\)',
     'absent'),
    (XL_LIKE_ARCH, dict(TINY_ARCH, dw_ratio=1.5), 'stages.0.blocks.0.large_kernel.small_conv.conv.weight', 'absent',
     r'\(12, 1, 5, 5\)'),
])
def test_depth_or_branch_mismatch_is_an_error(tmp_path, file_arch, model_arch, key, theirs, ours):
    path = save(tmp_path, source_model(file_arch).state_dict())
    with pytest.raises(ValueError, match=rf'first mismatch at {key}: checkpoint {theirs} vs backbone {ours}'):
        load_pretrained(RepLKNet(arch=model_arch), path)


def test_official_31b_key_lists_load(tmp_path, reference_dir, log_messages):
    """The released 31B layouts (shapes from the reference key lists) load into both forms of the backbone."""
    for tsv, deploy in (('official_keys_31B_train.tsv', False), ('official_keys_31B_deploy.tsv', True)):
        state = {k: torch.zeros(()).expand(shape) for k, shape in read_key_list(reference_dir / tsv).items()}
        path = save(tmp_path, state, tsv.replace('.tsv', '.pth'))
        model = RepLKNet(arch='31B', small_kernel_merged=deploy)
        report = load_pretrained(model, path)
        assert report['missing'] == []
        assert sorted(report['ignored']) == ['head.bias', 'head.weight', 'norm.bias', 'norm.num_batches_tracked',
                                             'norm.running_mean', 'norm.running_var', 'norm.weight']
        assert any('(arch 31B, ' + ('deploy' if deploy else 'training') + ' form)' in m for m in log_messages())


def test_not_a_replknet_file(tmp_path):
    path = save(tmp_path, {'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(1000, 2048)})
    with pytest.raises(ValueError, match='holds no RepLKNet backbone weights .*conv1.weight, fc.weight'):
        load_pretrained(RepLKNet(arch=TINY_ARCH), path)


def test_missing_file_gives_the_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found: .*nothing.pth.*model.backbone.init_cfg=None'):
        load_pretrained(RepLKNet(arch=TINY_ARCH), str(tmp_path / 'nothing.pth'))


def test_url_is_fetched_with_weights_only(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    source = source_model()
    path = save(tmp_path, official_state(source), 'replknet-tiny.pth')
    model = RepLKNet(arch=TINY_ARCH, dwconv_impl='torch')
    load_pretrained(model, f'file://{path}')
    assert (tmp_path / 'torch_home' / 'hub' / 'checkpoints' / 'replknet-tiny.pth').is_file()
    assert_same_outputs(model, source, tol=1e-7)
