"""DDP that also runs on CPU processes (gloo), where mmengine always passes a GPU ``device_ids``."""
from mmengine.model import MMDistributedDataParallel

from replk_mm.registry import register_model_wrapper


@register_model_wrapper
class CPUCapableDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel``; drops ``device_ids`` when the module lives on the CPU."""

    def __init__(self, module, device_ids=None, **kwargs):
        if not any(p.is_cuda for p in module.parameters()):
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)
