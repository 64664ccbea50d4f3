from .config import find_missing_pretrained, load_run_config

__all__ = ['load_run_config', 'find_missing_pretrained']
