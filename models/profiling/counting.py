"""FLOPs of a PyTorch call under this project's counting rule, by torch.utils.flop_counter.FlopCounterMode.

The rule is edge_vad_export.budgets' (so PyTorch and ONNX counts compare): FLOPs = 2 x multiply-accumulates of
matrix products and convolutions (Linear, matmul / bmm, Conv, attention's two products); biases, elementwise and
normalisation ops are not counted. Two details make FlopCounterMode follow it:
- attention is counted dense (T x T products), with PyTorch's "math" SDPA kernel: the fused CPU / CUDA kernels
  are either not in FlopCounterMode's table or skip the masked half of a causal product;
- fused inference fast paths (nn.TransformerEncoderLayer, nn.MultiheadAttention under no_grad or with frozen
  weights) run ops FlopCounterMode does not know; counting runs with autograd on and the parameters temporarily
  requiring grad, so the modules take their plain path. Nothing is backpropagated.
Works on the meta device too (shapes only, nothing computed).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

COUNTING_RULE = ("FLOPs = 2 x multiply-accumulates of matrix products and convolutions (Linear, matmul, conv, "
                 "attention products counted dense); biases, elementwise and normalisation ops not counted "
                 "(the rule of edge_vad_export.budgets); counted with torch.utils.flop_counter.FlopCounterMode")


@contextmanager
def _plain_paths(modules: tuple[nn.Module, ...]) -> Iterator[None]:
    params = [p for m in modules for p in m.parameters() if p.is_floating_point()]
    before = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


def count_flops(fn: Callable[[], Any], *modules: nn.Module) -> int:
    """FLOPs of one call of fn() by the rule above; `modules` are those fn runs (their fast paths are disabled)."""
    with _plain_paths(modules), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count_params(module: nn.Module) -> int:
    """Elements of the module's floating-point parameters (each tensor once, as nn.Module.parameters gives them)."""
    return sum(p.numel() for p in module.parameters() if p.is_floating_point())
