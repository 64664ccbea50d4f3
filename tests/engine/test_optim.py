"""MergedGroupsOptimWrapperConstructor against mmengine's DefaultOptimWrapperConstructor: same updates, few groups,
checkpoints that either constructor resumes from."""
import copy
import io

import mmdet.registry  # noqa: F401  (creates the mmdet scope)
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, PARAM_SCHEDULERS, DefaultScope
from mmseg.registry import MODELS as SEG_MODELS
from torch import nn

import replk_mm  # noqa: F401  (registers RepLKNet, for the quickstart config's model)
from replk_mm.engine.optim import MergedGroupsOptimWrapperConstructor
from replk_mm.numerics import relative_error

from conftest import PROJECT_ROOT

OPTIMIZER = dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05)
# Every rule of mmengine's paramwise_cfg that a conv net meets, plus nested custom keys.
RICH_PARAMWISE = dict(norm_decay_mult=0.0, bias_decay_mult=0.5, bias_lr_mult=2.0, dwconv_decay_mult=0.3,
                      custom_keys={'head': dict(lr_mult=10.0), 'head.2.bias': dict(lr_mult=10.0, decay_mult=0.0)})


class ToyNet(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3)
        self.stem_norm = nn.BatchNorm2d(width)
        self.dw = nn.Conv2d(width, width, 5, groups=width)
        self.ln = nn.LayerNorm(width)
        self.gn = nn.GroupNorm(2, width)
        self.frozen = nn.Linear(width, width).requires_grad_(False)
        self.head = nn.Sequential(nn.Linear(width, 16), nn.ReLU(), nn.Linear(16, 4))


def tiny_upernet():
    """The quickstart config's UperNet-RepLKNet (a real model) and its optim_wrapper config."""
    cfg = Config.fromfile(str(PROJECT_ROOT / 'configs' / 'upernet_replknet_tiny_synthetic_ade20k.py'))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = SEG_MODELS.build(cfg.model)
    return model, cfg.optim_wrapper.to_dict()


def wrapper_cfg(constructor, paramwise_cfg, optimizer=OPTIMIZER):
    return dict(type='OptimWrapper', constructor=constructor, optimizer=dict(optimizer),
                paramwise_cfg=copy.deepcopy(paramwise_cfg))


def build(constructor, model, paramwise_cfg, optimizer=OPTIMIZER):
    return build_optim_wrapper(model, wrapper_cfg(constructor, paramwise_cfg, optimizer))


def schedulers(wrapper):
    """The segmentation configs' schedule in miniature: linear warm-up, then poly decay."""
    return [PARAM_SCHEDULERS.build(dict(type='LinearLR', optimizer=wrapper, start_factor=0.1, by_epoch=False,
                                        begin=0, end=3)),
            PARAM_SCHEDULERS.build(dict(type='PolyLR', optimizer=wrapper, power=1.0, eta_min=0.0, by_epoch=False,
                                        begin=3, end=8))]


def train(model, wrapper, steps, first_step=0, param_schedulers=()):
    """AdamW steps with fixed pseudo-random gradients per step (the same for every constructor)."""
    for step in range(first_step, first_step + steps):
        generator = torch.Generator().manual_seed(step)
        for param in model.parameters():
            param.grad = torch.randn(param.shape, generator=generator) if param.requires_grad else None
        wrapper.step()
        for scheduler in param_schedulers:
            scheduler.step()


def saved_and_loaded(state_dict):
    """A round trip through torch.save / torch.load(weights_only=True), as a checkpoint makes."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_same_params(model, ref):
    ref_params = dict(ref.named_parameters())
    for name, param in model.named_parameters():
        assert relative_error(param, ref_params[name]) < 1e-6, name


def group_names(model, wrapper):
    names = {id(param): name for name, param in model.named_parameters()}
    return [[names[id(param)] for param in group['params']] for group in wrapper.optimizer.param_groups]


def lr_by_name(model, wrapper):
    return {name: group['lr'] for names, group in zip(group_names(model, wrapper), wrapper.optimizer.param_groups)
            for name in names}


def test_rich_paramwise_cfg_groups_by_settings_in_model_order():
    model = ToyNet()
    merged = build('MergedGroupsOptimWrapperConstructor', model, RICH_PARAMWISE)
    assert group_names(model, merged) == [
        ['stem.weight'],  # no rule applies: the optimizer's own settings (frozen.* are left out, as by default)
        ['stem.bias', 'dw.bias'],  # bias_lr_mult, bias_decay_mult (before dwconv_decay_mult in mmengine 0.10)
        ['stem_norm.weight', 'stem_norm.bias', 'ln.weight', 'ln.bias', 'gn.weight', 'gn.bias'],  # norm_decay_mult
        ['dw.weight'],  # dwconv_decay_mult
        ['head.0.weight', 'head.0.bias', 'head.2.weight'],  # custom key 'head'
        ['head.2.bias'],  # the longer custom key wins
    ]
    lr, wd = OPTIMIZER['lr'], OPTIMIZER['weight_decay']
    expected = [(lr, wd), (2 * lr, 0.5 * wd), (lr, 0.0), (lr, 0.3 * wd), (10 * lr, wd), (10 * lr, 0.0)]
    got = [(group['lr'], group['weight_decay']) for group in merged.optimizer.param_groups]
    assert got == pytest.approx(expected)
    assert all(group['foreach'] is True for group in merged.optimizer.param_groups)


@pytest.mark.parametrize('model_name', ['toy', 'tiny_upernet'])
def test_three_steps_match_default_constructor(model_name):
    if model_name == 'toy':
        model, paramwise_cfg = ToyNet(), RICH_PARAMWISE
        optimizer = OPTIMIZER
    else:
        model, optim_wrapper = tiny_upernet()
        paramwise_cfg, optimizer = optim_wrapper['paramwise_cfg'], optim_wrapper['optimizer']
    ref, initial = copy.deepcopy(model), copy.deepcopy(model)
    merged = build('MergedGroupsOptimWrapperConstructor', model, paramwise_cfg, optimizer)
    default = build('DefaultOptimWrapperConstructor', ref, paramwise_cfg, optimizer)
    # One group per trainable parameter by default; a handful merged.
    assert len(default.optimizer.param_groups) == sum(param.requires_grad for param in ref.parameters())
    assert len(merged.optimizer.param_groups) <= 6
    if model_name == 'tiny_upernet':  # norm_decay_mult=0.0 only: decayed and not decayed
        assert [group['weight_decay'] for group in merged.optimizer.param_groups] == [0.05, 0.0]
    train(model, merged, steps=3)
    train(ref, default, steps=3)
    assert_same_params(model, ref)
    for param, start in zip(model.parameters(), initial.parameters()):  # the steps did move the parameters
        assert (relative_error(param, start) > 1e-4) == param.requires_grad


def test_without_paramwise_cfg_one_group_as_default():
    model = ToyNet()
    merged = build('MergedGroupsOptimWrapperConstructor', model, None)
    default = build('DefaultOptimWrapperConstructor', copy.deepcopy(model), None)
    assert len(merged.optimizer.param_groups) == len(default.optimizer.param_groups) == 1
    assert merged.optimizer.param_groups[0]['foreach'] is True


def test_explicit_foreach_in_config_is_kept():
    merged = build('MergedGroupsOptimWrapperConstructor', ToyNet(), RICH_PARAMWISE, dict(OPTIMIZER, foreach=False))
    assert all(group['foreach'] is False for group in merged.optimizer.param_groups)


def test_checkpoint_has_the_default_constructors_layout():
    model = ToyNet()
    ref = copy.deepcopy(model)
    merged = build('MergedGroupsOptimWrapperConstructor', model, RICH_PARAMWISE)
    default = build('DefaultOptimWrapperConstructor', ref, RICH_PARAMWISE)
    train(model, merged, steps=2, param_schedulers=schedulers(merged))
    train(ref, default, steps=2, param_schedulers=schedulers(default))
    ours, theirs = merged.state_dict(), default.state_dict()
    assert ours['param_groups'] == theirs['param_groups']
    assert ours['state'].keys() == theirs['state'].keys()
    for index, param_state in theirs['state'].items():
        assert ours['state'][index].keys() == param_state.keys()
        for key, value in param_state.items():
            assert relative_error(ours['state'][index][key], value) < 1e-6, (index, key)
    # Saving did not disturb the running optimizer.
    assert len(merged.optimizer.param_groups) == 6


@pytest.mark.parametrize('writer,reader', [
    ('DefaultOptimWrapperConstructor', 'MergedGroupsOptimWrapperConstructor'),
    ('MergedGroupsOptimWrapperConstructor', 'DefaultOptimWrapperConstructor'),
    ('MergedGroupsOptimWrapperConstructor', 'MergedGroupsOptimWrapperConstructor'),
])
def test_resume_across_constructors(writer, reader):
    """Five steps with `writer`, a checkpoint, three more with `reader`: as if the default had resumed."""
    model = ToyNet()
    wrapper = build(writer, model, RICH_PARAMWISE)
    writer_schedulers = schedulers(wrapper)
    train(model, wrapper, steps=5, param_schedulers=writer_schedulers)
    checkpoint = saved_and_loaded(dict(model=model.state_dict(), optimizer=wrapper.state_dict(),
                                       param_schedulers=[s.state_dict() for s in writer_schedulers]))

    def resume(constructor):
        resumed_model = ToyNet()
        resumed_model.load_state_dict(checkpoint['model'])
        resumed = build(constructor, resumed_model, RICH_PARAMWISE)
        resumed_schedulers = schedulers(resumed)  # the Runner's order: built, then states loaded
        resumed.load_state_dict(copy.deepcopy(checkpoint['optimizer']))
        for scheduler, state in zip(resumed_schedulers, checkpoint['param_schedulers']):
            scheduler.load_state_dict(state)
        train(resumed_model, resumed, steps=3, first_step=5, param_schedulers=resumed_schedulers)
        return resumed_model, resumed

    resumed_model, resumed = resume(reader)
    ref_model, ref = resume('DefaultOptimWrapperConstructor')
    assert_same_params(resumed_model, ref_model)
    assert lr_by_name(resumed_model, resumed) == pytest.approx(lr_by_name(ref_model, ref))
    # And the resumed run really continued the first one: AdamW's step count went on.
    assert all(state['step'].item() == 8 for state in resumed.optimizer.state.values())


def test_checkpoint_of_another_paramwise_cfg_fails_naming_the_cause():
    model = ToyNet()
    default = build('DefaultOptimWrapperConstructor', model, dict(custom_keys={'head.0': dict(lr_mult=10.0)}))
    train(model, default, steps=1)
    merged = build('MergedGroupsOptimWrapperConstructor', copy.deepcopy(model), dict(norm_decay_mult=0.0))
    with pytest.raises(ValueError, match=r"stem.weight and head.0.weight differ in \['lr', 'lr_mult'\].*"
                                         r"another paramwise_cfg"):
        merged.load_state_dict(saved_and_loaded(default.state_dict()))


def test_checkpoint_of_another_model_fails_naming_the_cause():
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    default = build('DefaultOptimWrapperConstructor', other, RICH_PARAMWISE)
    merged = build('MergedGroupsOptimWrapperConstructor', ToyNet(), RICH_PARAMWISE)
    with pytest.raises(ValueError, match=r'4 parameter groups holding 4 parameters.*14 groups of one parameter'):
        merged.load_state_dict(default.state_dict())
    wider = ToyNet(width=4)
    default = build('DefaultOptimWrapperConstructor', wider, RICH_PARAMWISE)
    train(wider, default, steps=1)
    with pytest.raises(ValueError, match=r"'exp_avg' for stem.weight has shape \(4, 3, 3, 3\).*\(8, 3, 3, 3\)"):
        merged.load_state_dict(default.state_dict())


@pytest.mark.parametrize('scope,name', [('mmseg', 'MergedGroupsOptimWrapperConstructor'),
                                        ('mmdet', 'MergedGroupsOptimWrapperConstructor'),
                                        ('mmseg', 'replk_mm.MergedGroupsOptimWrapperConstructor')])
def test_constructor_resolves_from_our_configs_scopes(scope, name):
    with DefaultScope.overwrite_default_scope(scope):
        constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(type=name, optim_wrapper_cfg=dict(optimizer=OPTIMIZER)))
        wrapper = build(name, ToyNet(), RICH_PARAMWISE)
    assert type(constructor) is MergedGroupsOptimWrapperConstructor
    assert len(wrapper.optimizer.param_groups) == 6


@pytest.mark.slow
def test_runner_resumes_across_constructors(tmp_path):
    """mmengine's Runner, the quickstart config: 2 iterations with one constructor, resumed for 3 with the other
    (optimizer, schedulers, AdamW steps): the same weights as resuming with the default constructor throughout."""
    from mmengine.runner import Runner

    from replk_mm.apis import load_run_config
    from replk_mm.checkpoint import allow_mmengine_checkpoints
    from replk_mm.data import make_ade20k

    allow_mmengine_checkpoints()  # the Runner resumes with torch.load
    data_root = make_ade20k(tmp_path / 'ade', num_train=8, num_val=2)

    def train_run(constructor, work_dir, max_iters, resume_from=None):
        cfg = load_run_config(str(PROJECT_ROOT / 'configs' / 'upernet_replknet_tiny_synthetic_ade20k.py'),
                              cfg_options={'train_dataloader.dataset.data_root': str(data_root),
                                           'train_dataloader.batch_size': 2, 'train_dataloader.num_workers': 0},
                              work_dir=str(tmp_path / work_dir))
        cfg.optim_wrapper.constructor = constructor
        cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=1000)
        cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3),
                               dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=3, end=8)]
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=2)
        for part in ('val', 'test'):
            cfg[f'{part}_dataloader'] = cfg[f'{part}_evaluator'] = cfg[f'{part}_cfg'] = None
        cfg.resume, cfg.load_from = resume_from is not None, resume_from
        runner = Runner.from_cfg(cfg)
        runner.train()
        return {name: value.detach().clone() for name, value in runner.model.state_dict().items()
                if value.is_floating_point()}

    default, merged = 'DefaultOptimWrapperConstructor', 'MergedGroupsOptimWrapperConstructor'
    checkpoints = {}
    for writer in (default, merged):
        train_run(writer, f'first_{writer}', max_iters=2)
        checkpoints[writer] = str(tmp_path / f'first_{writer}' / 'iter_2.pth')
    reference = train_run(default, 'default_default', max_iters=5, resume_from=checkpoints[default])
    at_checkpoint = torch.load(checkpoints[default], weights_only=True)['state_dict']
    assert relative_error([reference[name] for name in at_checkpoint if name in reference],
                          [value for name, value in at_checkpoint.items() if name in reference]) > 1e-4  # it trained
    for writer, reader in ((default, merged), (merged, default), (merged, merged)):
        resumed = train_run(reader, f'{writer}_{reader}', max_iters=5, resume_from=checkpoints[writer])
        assert relative_error(list(resumed.values()), list(reference.values())) < 1e-6, (writer, reader)


def test_compiled_training_steps_leave_the_optimizer_step_eager():
    """Under torch.compile (mmengine's compile=True compiles train_step, the optimizer step with it) the step is
    not traced: tracing it guards on every group's lr and recompiles at each scheduler step. The updates and the
    schedulers' wrapping of the step are those of eager steps."""
    from torch._dynamo.testing import CompileCounter
    model, ref = ToyNet(), ToyNet()
    ref.load_state_dict(model.state_dict())
    wrappers = [build('MergedGroupsOptimWrapperConstructor', net, RICH_PARAMWISE) for net in (model, ref)]
    scheds = [schedulers(wrapper) for wrapper in wrappers]
    counter = CompileCounter()
    torch._dynamo.reset()
    compiled_step = torch.compile(lambda: wrappers[0].step(), backend=counter)
    for step in range(4):  # the warm-up's lr changes at every step
        for net, wrapper_step in ((model, compiled_step), (ref, wrappers[1].step)):
            generator = torch.Generator().manual_seed(step)
            for param in net.parameters():
                param.grad = torch.randn(param.shape, generator=generator) if param.requires_grad else None
            wrapper_step()
        for scheduler in scheds[0] + scheds[1]:
            scheduler.step()
    assert counter.frame_count == 0  # no graph of the optimizer's step was compiled
    assert wrappers[0]._global_step == wrappers[1]._global_step == 3  # mmengine's schedulers' counter (-1 at first)
    assert_same_params(model, ref)
