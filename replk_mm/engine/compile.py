"""mmengine's ``compile=True`` together with ``--amp``, on current PyTorch.

mmengine compiles the model's ``train_step``, which enters ``AmpOptimWrapper.optim_context`` and with it
``mmengine.runner.amp.autocast``. That checks torch's version with ``digit_version`` on every entry, and
dynamo (torch 2.11) fails tracing ``packaging.version.Version`` there (``InternalTorchDynamoError`` on an
``InvalidVersion`` raised ``from None``). The version of a fixed string is a constant: marked so, dynamo calls
``digit_version`` while tracing instead of tracing into it.
"""
import torch
from mmengine.utils import version_utils

torch.compiler.assume_constant_result(version_utils.digit_version)
