"""``import replk_mm`` makes RepLKNet buildable from every MM scope and through custom_imports."""
import subprocess
import sys
import textwrap

import pytest
import torch

import replk_mm
from replk_mm import RepLKNet

from conftest import TINY_ARCH


def registries():
    import mmdet.registry
    import mmseg.registry
    found = [('mmseg', mmseg.registry.MODELS), ('mmdet', mmdet.registry.MODELS), ('replk_mm', replk_mm.MODELS)]
    try:
        import mmpretrain.registry
        found.append(('mmpretrain', mmpretrain.registry.MODELS))
    except ImportError:
        pass
    return found


@pytest.mark.parametrize('type_name', ['RepLKNet', 'replk_mm.RepLKNet'])
@pytest.mark.parametrize('scope, registry', registries(), ids=lambda v: v if isinstance(v, str) else '')
def test_build_from_every_scope(scope, registry, type_name):
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(dict(type=type_name, arch=TINY_ARCH))
    assert type(model) is RepLKNet
    assert len(model.eval()(torch.randn(1, 3, 32, 32))) == 4


def test_mmpretrain_keeps_its_own_replknet_unless_asked():
    mmpretrain_registry = pytest.importorskip('mmpretrain.registry')
    import mmpretrain.models  # noqa: F401
    assert mmpretrain_registry.MODELS.get('RepLKNet') is not RepLKNet
    replk_mm.replace_mmpretrain_replknet()
    assert mmpretrain_registry.MODELS.get('RepLKNet') is RepLKNet


def test_build_31b_from_mmseg_registry():
    from mmseg.registry import MODELS
    model = MODELS.build(dict(type='RepLKNet', arch='31B'))
    assert sum(p.numel() for p in model.parameters()) == 78_837_120


def run_python(code):
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_custom_imports_builds_without_other_imports(tmp_path):
    config = tmp_path / 'cfg.py'
    config.write_text(textwrap.dedent(f"""
        custom_imports = dict(imports=['replk_mm'], allow_failed_imports=False)
        backbone = dict(type='RepLKNet', arch={TINY_ARCH!r})
    """))
    result = run_python(f"""
        import sys
        from mmengine.config import Config
        from mmseg.registry import MODELS
        assert 'replk_mm' not in sys.modules
        cfg = Config.fromfile({str(config)!r})
        assert 'replk_mm' in sys.modules
        model = MODELS.build(cfg.backbone)
        print(type(model).__module__, type(model).__name__)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['replk_mm.models.backbones.replknet', 'RepLKNet']


def test_import_needs_neither_mmseg_nor_mmdet():
    result = run_python("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('mmseg', 'mmdet'):
                    raise ImportError(f'blocked {name}')
        sys.meta_path.insert(0, Block())
        import replk_mm
        model = replk_mm.RepLKNet(arch='31B')
        print(sum(p.numel() for p in model.parameters()))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '78837120'
