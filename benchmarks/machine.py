"""The machine a benchmark ran on, for its results file: figures mean little without it.

The same 2-core box class may be an AMX Xeon (bfloat16 matmuls ~2.3 TFLOP/s) or an AVX2 EPYC
(no native bfloat16; float32 ~0.1 TFLOP/s), so the CPU model and its bfloat16 support are kept.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` says."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    names = (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    return next(names, platform.processor())


def describe() -> dict[str, Any]:
    import torch

    from giellm.models.loading import bf16_native

    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_native": bf16_native("cpu"),
    }
