"""Fused kernels for a frozen model at inference: fewer, larger ops per decode step.

Gemma's RMSNorm is nine small ops (upcast, square, mean, add, rsqrt, two multiplies, the
weight's upcast, the downcast), six norms a layer: about a fifth of a CPU decode step's time
with the default model (torch profiler), most of it the start and end of parallel regions
rather than arithmetic. `F.rms_norm` computes the same float32 formula in one kernel, with
`1 + weight` computed once at load. Outputs agree to float32 rounding (534 stockmark dev
sentences: F1 0.765 with and without).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F


def _gemma_norm(self: Any, x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x.float(), (x.shape[-1],), self.fused_scale, self.eps).type_as(x)


def fuse_norms(model: torch.nn.Module) -> int:
    """Give every Gemma RMSNorm of `model` the fused forward; returns how many. The weights
    must not change afterwards (the scale is computed from them now)."""
    fused = 0
    for module in model.modules():
        if type(module).__name__ not in ("Gemma3RMSNorm", "GemmaRMSNorm", "Gemma2RMSNorm"):
            continue
        scale = (1.0 + module.weight.detach().float()).contiguous()
        module.register_buffer("fused_scale", scale, persistent=False)
        module.forward = types.MethodType(_gemma_norm, module)
        fused += 1
    return fused
