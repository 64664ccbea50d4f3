"""An optimizer-wrapper constructor that gives the optimizer a handful of parameter groups, not one per parameter.

As soon as ``paramwise_cfg`` is set, mmengine's ``DefaultOptimWrapperConstructor`` puts every parameter in a
group of its own (601 for UperNet-RepLKNet-31B), and AdamW then walks them one by one on the host: 84 ms of a
321 ms step on an H200. :class:`MergedGroupsOptimWrapperConstructor` resolves ``paramwise_cfg`` with the default
constructor's own ``add_params`` and merges the parameters whose settings are equal into one group each, in order
of first appearance, with the multi-tensor (``foreach``) AdamW, or the fused one when every parameter is on CUDA.
Every parameter gets the same lr, weight decay and update as under the default constructor.

The optimizer's ``step`` is kept out of ``torch.compile``: mmengine's ``compile=True`` compiles ``train_step``,
optimizer step included, where dynamo guards on each group's lr (a Python float) and so recompiles at every
scheduler step (on a CPU each AdamW recompile of the tiny UperNet took about a minute); the foreach or fused step
gains nothing from it.

Checkpoints keep the default constructor's layout (one group per parameter, in model order), converted in the
optimizer's state-dict hooks: each constructor resumes from the other's checkpoints. The parameter schedulers'
own state (``base_values``, ``_last_value``: one entry per group) is not converted; mmengine's LinearLR, PolyLR,
MultiStepLR and StepLR compute each step from the groups' current values and are unaffected by it.
"""
import inspect
import types

import torch
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS

from replk_mm.registry import register_optim_wrapper_constructor

# Group entries that choose how a step runs, not what it computes: the running constructor decides them.
KERNEL_FLAGS = ('foreach', 'fused', 'capturable')


def merge_param_groups(param_groups, defaults):
    """Merge groups whose settings (``defaults`` updated by the group's own keys) are equal.

    Groups keep the order of their first parameter, and parameters keep their order within each group.
    """
    merged = []
    for group in param_groups:
        settings = {**defaults, **_settings(group)}
        target = next((candidate for candidate in merged if _settings(candidate) == settings), None)
        if target is None:
            merged.append({**settings, 'params': list(group['params'])})
        else:
            target['params'].extend(group['params'])
    return merged


def _settings(group, exclude=('params',)):
    return {key: value for key, value in group.items() if key not in exclude}


class DefaultLayout:
    """Converts an optimizer state dict between merged groups and one group per parameter in model order.

    Args:
        params (list[Tensor]): the parameters in the default constructor's order (its ``add_params`` order).
        names (dict[int, str]): ``id(param) -> name``, for error messages.
        saved_flags (dict): the kernel flags the default constructor's groups would hold; written into
            checkpoints so that they read exactly as the default constructor's.
    """

    def __init__(self, params, names, saved_flags):
        self.params = params
        self.names = names
        self.saved_flags = saved_flags

    def _positions(self, optimizer):
        """For each parameter of ``optimizer`` in its own (merged) order, its index in model order."""
        position = {id(param): index for index, param in enumerate(self.params)}
        return [position[id(param)] for group in optimizer.param_groups for param in group['params']]

    def to_default(self, optimizer, state_dict):
        """``Optimizer.state_dict`` post-hook: merged layout -> one group per parameter."""
        positions = self._positions(optimizer)
        groups = [None] * len(self.params)
        for group in state_dict['param_groups']:
            settings = {**_settings(group), **self.saved_flags}
            for index in group['params']:
                groups[positions[index]] = {**settings, 'params': [positions[index]]}
        state = {positions[index]: value for index, value in state_dict['state'].items()}
        return {**state_dict, 'state': dict(sorted(state.items())), 'param_groups': groups}

    def from_default(self, optimizer, state_dict):
        """``Optimizer.load_state_dict`` pre-hook: one group per parameter -> merged layout.

        Raises:
            ValueError: the state dict is not in the default layout for this model, two parameters that share a
                group here have different settings in it, or a state tensor has another shape than its parameter.
        """
        saved_groups = state_dict['param_groups']
        if [group['params'] for group in saved_groups] != [[index] for index in range(len(self.params))]:
            sizes = [len(group['params']) for group in saved_groups]
            raise ValueError(
                f'Cannot load the optimizer state: it has {len(sizes)} parameter groups holding {sum(sizes)} '
                f'parameters, but MergedGroupsOptimWrapperConstructor reads the layout that '
                f'DefaultOptimWrapperConstructor writes for this model and paramwise_cfg: {len(self.params)} groups '
                f'of one parameter each. The checkpoint was written for another model or paramwise_cfg.')
        positions = self._positions(optimizer)
        state, groups, start = {}, [], 0
        for group in optimizer.param_groups:
            members = positions[start:start + len(group['params'])]
            reference = _settings(saved_groups[members[0]], exclude=('params', ) + KERNEL_FLAGS)
            for member in members[1:]:
                self._check_same_settings(reference, saved_groups[member], members[0], member)
            kernel = {key: group[key] for key in KERNEL_FLAGS if key in group}
            groups.append({**reference, **kernel, 'params': list(range(start, start + len(members)))})
            for offset, member in enumerate(members):
                if member in state_dict['state']:
                    state[start + offset] = self._checked_state(state_dict['state'][member], member)
            start += len(members)
        return {**state_dict, 'state': state, 'param_groups': groups}

    def _name(self, index):
        return self.names.get(id(self.params[index]), f'parameter #{index}')

    def _check_same_settings(self, reference, saved_group, reference_index, index):
        settings = _settings(saved_group, exclude=('params', ) + KERNEL_FLAGS)
        differing = sorted(key for key in reference.keys() | settings.keys()
                           if reference.get(key) != settings.get(key))
        if differing:
            raise ValueError(
                f'Cannot load the optimizer state: its groups for {self._name(reference_index)} and '
                f'{self._name(index)} differ in {differing}, but this config\'s paramwise_cfg puts both in one '
                f'group. The checkpoint was written with another paramwise_cfg; resume with that one.')

    def _checked_state(self, param_state, index):
        param = self.params[index]
        for key, value in param_state.items():
            if hasattr(value, 'shape') and value.dim() > 0 and value.shape != param.shape:
                raise ValueError(
                    f'Cannot load the optimizer state: its {key!r} for {self._name(index)} has shape '
                    f'{tuple(value.shape)}, the parameter has {tuple(param.shape)}. The checkpoint was written '
                    f'for another model.')
        return param_state


@register_optim_wrapper_constructor
class MergedGroupsOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` with parameters of equal settings merged into one group each.

    Same arguments and ``paramwise_cfg`` keys as the default constructor. Unless the optimizer config sets
    ``foreach`` or ``fused`` itself, the optimizer gets ``fused=True`` when it supports it and every parameter is
    on CUDA, otherwise ``foreach=True`` when it supports that.
    """

    def __call__(self, model):
        if hasattr(model, 'module'):
            model = model.module
        optimizer_cls = self._optimizer_class()
        signature = inspect.signature(optimizer_cls).parameters
        params_arg = next(iter(signature))  # 'params' for torch's optimizers, as the default constructor reads it
        optimizer_cfg = {**self.optimizer_cfg, **self._kernel_choice(signature, list(model.parameters()))}
        if not self.paramwise_cfg:
            # The default constructor's layout is one group already.
            optimizer_cfg[params_arg] = model.parameters()
            optimizer = OPTIMIZERS.build(optimizer_cfg)
        else:
            per_parameter = []
            self.add_params(per_parameter, model)
            defaults = {key: value for key, value in self.optimizer_cfg.items() if key != 'type'}
            optimizer_cfg[params_arg] = merge_param_groups(per_parameter, defaults)
            optimizer = OPTIMIZERS.build(optimizer_cfg)
            saved_flags = {flag: self.optimizer_cfg.get(flag, signature[flag].default)
                           for flag in KERNEL_FLAGS if flag in signature}
            layout = DefaultLayout(params=[group['params'][0] for group in per_parameter],
                                   names={id(param): name for name, param in model.named_parameters()},
                                   saved_flags=saved_flags)
            optimizer.register_state_dict_post_hook(layout.to_default)
            optimizer.register_load_state_dict_pre_hook(layout.from_default)
        # A bound method still: schedulers wrap an optimizer's step through its __func__ and __self__.
        optimizer.step = types.MethodType(torch.compiler.disable(type(optimizer).step), optimizer)
        optim_wrapper_cfg = dict(self.optim_wrapper_cfg)
        optim_wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(optim_wrapper_cfg, default_args=dict(optimizer=optimizer))

    def _optimizer_class(self):
        optimizer_type = self.optimizer_cfg['type']
        if not isinstance(optimizer_type, str):
            return optimizer_type
        with OPTIMIZERS.switch_scope_and_registry(None) as registry:
            optimizer_cls = registry.get(optimizer_type)
        if optimizer_cls is None:
            raise KeyError(f'optim_wrapper.optimizer.type={optimizer_type!r} is not a registered optimizer')
        return optimizer_cls

    def _kernel_choice(self, signature, params):
        if 'foreach' in self.optimizer_cfg or 'fused' in self.optimizer_cfg:
            return {}
        if 'fused' in signature and params and all(param.is_cuda for param in params):
            return {'fused': True}
        if 'foreach' in signature:
            return {'foreach': True}
        return {}
