"""Code to prepend to a `python -c` program so that importing torch raises there (the runtime must not need it)."""

import textwrap

BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys
    class _NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked: the runtime must not import it")
            return None
    sys.meta_path.insert(0, _NoTorch())
    """
)
