"""Reading configs for the tools: files or ``package::path``, ``--cfg-options`` checks, scope, deploy form."""
import copy
import inspect
import os.path as osp

from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.utils import get_installed_path, is_installed

SCOPES = ('mmseg', 'mmdet')
# Top-level keys that mmengine's Runner reads from a config (its arguments, and those it reads from the config
# itself: ``compile`` in ``train``, ``model_wrapper_cfg`` and the rest in ``wrap_model``): a config may leave them
# out, and ``--cfg-options compile.dynamic=True`` or ``model_wrapper_cfg.gradient_as_bucket_view=True`` still names
# a real setting.
RUNNER_SETTINGS = frozenset(inspect.signature(Runner.__init__).parameters) - {'self'} | {
    'compile', 'model_wrapper_cfg', 'find_unused_parameters', 'sync_bn', 'activation_checkpointing',
    'efficient_conv_bn_eval'}
DEPLOY_CFG_OPTIONS = 'model.backbone.small_kernel_merged=True model.backbone.init_cfg=None'


def resolve_config_path(path):
    """A config file path, or ``package::path`` into an installed MM package's shipped configs.

    ``mmengine.hub.get_config`` would pip-install a package it does not find; this never downloads.
    """
    if '::' in path:
        package, relative = path.split('::', 1)
        if not is_installed(package):
            raise FileNotFoundError(f'config {path}: package {package!r} is not installed')
        path = osp.join(get_installed_path(package), '.mim', 'configs', relative)
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    return path


def load_config(path):
    """The config at ``path`` (see :func:`resolve_config_path`), as is."""
    return Config.fromfile(resolve_config_path(path))


def config_scope(cfg):
    """The config's ``default_scope``: which library (mmseg or mmdet) builds its model."""
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(f'{cfg.filename}: default_scope must be one of {SCOPES}, got {scope!r}')
    return scope


def deploy_config(cfg):
    """A copy of ``cfg`` whose backbone is built merged and loads no pretrained weights."""
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.small_kernel_merged = True
    cfg.model.backbone.init_cfg = None
    return cfg


def load_run_config(config, cfg_options=None, work_dir=None, launcher='none'):
    """Read ``config``, apply ``--cfg-options`` and pick the work dir as mmseg/mmdet's tools do.

    Raises a clear error for a missing config file or a ``--cfg-options`` key whose parent is
    not in the config (a typo would otherwise be silently added and ignored), unless that parent is a
    Runner setting the config leaves out (``compile.dynamic=True``) or the options add it, with its
    ``type``, to a collection of objects (``default_hooks.profiler.type=...``).
    """
    cfg = load_config(config)
    cfg.launcher = launcher
    if cfg_options:
        plain = cfg.to_dict()
        new_objects = {key[:-len('.type')] for key in cfg_options if key.endswith('.type')}
        for key, value in cfg_options.items():
            check_override(plain, config, key, value, new_objects)
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


def _holds_only_objects(node):
    """Whether a config dict is a collection of buildable objects (every value a dict with a ``type``), as
    ``default_hooks`` is: there a new key is a new member, elsewhere (``model``) most likely a typo."""
    return bool(node) and all(isinstance(value, dict) and 'type' in value for value in node.values())


def check_override(cfg_dict, config, key, value, new_objects=()):
    """A ``--cfg-options`` key must extend an existing dict or a Runner setting (``RUNNER_SETTINGS``), or add
    to a collection of objects one of ``new_objects`` (the keys of new dicts that the options give a ``type``),
    and keep the type of a value it replaces."""
    node = cfg_dict
    parts = key.split('.')
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if (isinstance(node, dict) and part not in node and '.'.join(parts[:depth + 1]) in new_objects
                and _holds_only_objects(node)):
            return  # a new object's settings: nothing in the config to check them against
        if depth == 0 and part not in node and part in RUNNER_SETTINGS:
            return  # a Runner setting the config leaves at its default
        if not isinstance(node, dict) or part not in node:
            parent = '.'.join(parts[:depth]) or '<top level>'
            raise KeyError(f'--cfg-options {key}: {config} has no key {part!r} under {parent}')
        node = node[part]
        if node is None:  # e.g. init_cfg=None replaced by a dict: anything goes below
            return
    last = parts[-1]
    if isinstance(node, dict) and last in node:
        old = node[last]
        numbers = (int, float)
        if old is not None and value is not None and not isinstance(value, type(old)) and not (
                isinstance(old, numbers) and isinstance(value, numbers) and not isinstance(value, bool)) and not (
                isinstance(old, (list, tuple)) and isinstance(value, (list, tuple))) and not (
                isinstance(old, dict) and isinstance(value, dict)):
            raise TypeError(f'--cfg-options {key}={value!r}: expected {type(old).__name__} like the config '
                            f'value {old!r}, got {type(value).__name__}')
