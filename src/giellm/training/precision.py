"""Where training runs and in which precision: `auto` settings resolved for the device.

On CPUs with bfloat16 matrix units (AMX, AVX512-BF16) bf16 matmuls run ~8x faster than float32;
a frozen LoRA base is then stored in bfloat16 once at load, so autocast has no weight to cast
at each step, while LoRA weights and optimizer state stay float32.
"""

from __future__ import annotations

import functools
import logging

from giellm.models.loading import bf16_native
from giellm.training.config import TrainConfig

logger = logging.getLogger(__name__)


def on_cpu() -> bool:
    """Train on CPUs: asked for (`accelerate launch --cpu`) or no GPU. The first
    `PartialState` fixes the backend, so every caller must agree: several processes on CPUs
    then join one gloo group instead of each training alone."""
    import torch
    from accelerate.utils import parse_flag_from_env

    return bool(parse_flag_from_env("ACCELERATE_USE_CPU")) or not torch.cuda.is_available()


def training_device() -> str:
    return "cpu" if on_cpu() else "cuda"


def load_dtype(config: TrainConfig) -> str:
    """`load_dtype` with auto resolved: a LoRA base is frozen, so bfloat16 where native (stored
    once; autocast then has nothing to cast); full fine-tuning keeps float32 master weights."""
    if config.load_dtype != "auto":
        return config.load_dtype
    native = config.lora is not None and bf16_native(training_device())
    return "bfloat16" if native else "float32"


def mixed_precision(config: TrainConfig) -> str:
    """`mixed_precision` with auto resolved: bf16 autocast where the device runs it natively."""
    if config.mixed_precision != "auto":
        return config.mixed_precision
    device = training_device()
    if bf16_native(device):
        return "bf16"
    if device == "cpu":
        _warn_float32_training()
    return "no"


@functools.cache
def _warn_float32_training() -> None:
    """Once per process: the run's speed is a quarter of what the docs quote for AMX CPUs."""
    logger.warning(
        "this CPU has no native bfloat16 (AMX or AVX512-BF16): training runs in float32, "
        "several times slower than on one that has it (docs/model.md, 'Training on a CPU')"
    )
