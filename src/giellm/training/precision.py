"""Where training runs and in which precision: `auto` settings resolved for the device.

On CPUs with bfloat16 matrix units (AMX, AVX512-BF16) bf16 matmuls run ~8x faster than float32;
a frozen LoRA base is then stored in bfloat16 once at load, so autocast has no weight to cast
at each step, while LoRA weights and optimizer state stay float32.
"""

from __future__ import annotations

from giellm.models.loading import bf16_native
from giellm.training.config import TrainConfig


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
    return "bf16" if bf16_native(training_device()) else "no"
