"""mmengine's ``compile=True`` together with ``--amp``, on current PyTorch.

mmengine compiles the model's ``train_step``, which enters ``AmpOptimWrapper.optim_context`` and with it
``mmengine.runner.amp.autocast``. That checks torch's version with ``digit_version`` on every entry, and
dynamo (torch 2.11) fails tracing ``packaging.version.Version`` there (``InternalTorchDynamoError`` on an
``InvalidVersion`` raised ``from None``). Marking ``digit_version`` as constant
(``torch.compiler.assume_constant_result``) got past that on the H200, only to fail comparing the two constant
results (a guard dynamo cannot build). Here autocast's ``digit_version`` is a look-up of versions computed
once, eagerly: dynamo traces a dict look-up and compares plain tuples of ints.
"""
import mmengine.runner.amp as mmengine_amp
from mmengine.utils import digit_version
from mmengine.utils.dl_utils import TORCH_VERSION

_digit_versions = {}


def remembered_digit_version(version_str, length=4):
    """``digit_version``, computed once per (string, length); later calls, traced ones too, look it up."""
    key = (version_str, length)
    if key not in _digit_versions:
        _digit_versions[key] = digit_version(version_str, length)
    return _digit_versions[key]


for _version in (TORCH_VERSION, '1.5.0', '1.10.0'):  # what mmengine 0.10's autocast compares
    remembered_digit_version(_version)
mmengine_amp.digit_version = remembered_digit_version
