"""Loading a trained giellm model (full weights or a LoRA adapter) with its task schemas.

A giellm model directory is an HF model directory plus `giellm.json`: the label sets each task
was trained with (constrained decoding restricts generation to them) and the window size.
A LoRA output directory holds the adapter; its base model is read from `adapter_config.json`
and the adapter is merged for inference speed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from giellm.errors import GiellmError
from giellm.models.bases import BaseSource, load_base, load_base_tokenizer, resolve_base
from giellm.models.integrity import check_model_dir, read_json_object
from giellm.ranges import bounds, check_ranges, check_windows
from giellm.tasks import LabelSchema

logger = logging.getLogger(__name__)  # under "giellm": the CLI's --verbose shows it

META_FILE = "giellm.json"
PACKAGE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = PACKAGE_DIR / "default_model"  # Gemma 3 270M + the shipped LoRA adapter
TINY_MODEL_DIR = PACKAGE_DIR / "tiny_model"  # the 5.5M from-scratch model: fast, for tests
TINY = "tiny"  # the from-scratch model, by name
DEFAULT_ENV = "GIELLM_DEFAULT_MODEL"  # what no --model means, when set (`tiny`, a directory)


@dataclass
class ModelMeta:
    """What generation needs to know about a trained model beyond its weights."""

    schemas: dict[str, LabelSchema] = field(default_factory=dict)
    window_chars: int = field(default=256, metadata=bounds(least=1))
    window_overlap: int = field(default=48, metadata=bounds(least=0))
    max_new_tokens: int = field(default=256, metadata=bounds(least=1))
    # label-only tasks look at the first windows only, as in training
    label_windows: int = field(default=1, metadata=bounds(least=1))

    def __post_init__(self) -> None:
        """The ranges training checks: a stored file outside them would decode nothing."""
        for name in ("window_chars", "window_overlap", "max_new_tokens", "label_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise GiellmError(f"{name}: expected a whole number, got {value!r}")
        check_ranges(self)
        check_windows(self.window_chars, self.window_overlap)

    def to_json(self) -> dict[str, Any]:
        return {
            "schemas": {task: s.as_dict() for task, s in sorted(self.schemas.items())},
            "window_chars": self.window_chars,
            "window_overlap": self.window_overlap,
            "max_new_tokens": self.max_new_tokens,
            "label_windows": self.label_windows,
        }

    @classmethod
    def from_json(cls, data: Any) -> ModelMeta:
        if not isinstance(data, dict):
            raise GiellmError(f"expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GiellmError(f"unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
        stored = data.get("schemas", {})
        if not isinstance(stored, dict) or not all(isinstance(s, dict) for s in stored.values()):
            raise GiellmError("schemas: expected an object of task: {labels, ...}")
        try:
            schemas = {task: LabelSchema.of(**s) for task, s in stored.items()}
        except TypeError as err:
            raise GiellmError(f"schemas: {err}") from None
        rest = {k: v for k, v in data.items() if k != "schemas"}
        return cls(schemas=schemas, **rest)

    def save(self, out_dir: Path) -> None:
        text = json.dumps(self.to_json(), ensure_ascii=False, indent=1)
        (Path(out_dir) / META_FILE).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def load(cls, model_dir: Path) -> ModelMeta:
        path = Path(model_dir) / META_FILE
        if not path.exists():
            return cls()
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, GiellmError) as err:  # not JSON, not UTF-8, or a bad value
            raise GiellmError(f"{path}: {err}") from None


def merge_schemas(schemas: list[LabelSchema]) -> LabelSchema:
    """The union of several datasets' label sets for one task (None if any is open)."""

    def union(name: str) -> frozenset[str] | None:
        values = [getattr(s, name) for s in schemas]
        if any(v is None for v in values):
            return None
        return frozenset().union(*values)

    return LabelSchema(*(union(name) for name in vars(LabelSchema())))


def default_model() -> str | Path:
    """The model used when none is named: `$GIELLM_DEFAULT_MODEL`, else the shipped default."""
    return os.environ.get(DEFAULT_ENV) or DEFAULT_MODEL_DIR


def resolve_model_dir(model: str | Path | None) -> Path:
    """`model` as a giellm model directory (None: the default, `tiny`: the from-scratch one);
    a clear error if it is not one."""
    if model is None:
        model = default_model()
    path = TINY_MODEL_DIR if str(model) == TINY else Path(model)
    if not is_model_dir(path):
        raise GiellmError(f"{path}: not a model directory (no config.json or adapter_config.json)")
    return path


def is_model_dir(model: str | Path | None) -> bool:
    """Is `model` a directory with weights or an adapter (else: a base to resolve by name)?"""
    if model is None:
        model = default_model()
    if str(model) == TINY:
        return True
    path = Path(model)
    return (path / "config.json").exists() or (path / "adapter_config.json").exists()


@dataclass(frozen=True)
class ResolvedModel:
    """What `--model` names: the base whose weights load, and the giellm directory (with its
    adapter, tokenizer and label sets) when there is one. Both backends start from this."""

    source: BaseSource
    path: Path | None = None
    adapter: dict[str, Any] | None = None

    @property
    def meta(self) -> ModelMeta:
        return ModelMeta() if self.path is None else ModelMeta.load(self.path)

    @property
    def tokenizer_location(self) -> str:
        """The model directory when it saved a tokenizer, else the base's."""
        if self.path is not None and has_tokenizer(self.path):
            return str(self.path)
        source = self.source
        return str(source.prepared or source.path or source.name)

    def load_tokenizer(self) -> Any:
        """The tokenizer, with a pad token (tokenizers load before weights: see `load_model`)."""
        if self.path is not None and has_tokenizer(self.path):
            return load_tokenizer(self.path)
        return with_pad_token(load_base_tokenizer(self.source))


def resolve_model(model: str | Path | None) -> ResolvedModel:
    """A giellm model directory (full weights, an adapter on its base, `tiny`) or a bare base."""
    if not is_model_dir(model):
        return ResolvedModel(resolve_base(str(model)))
    path = resolve_model_dir(model)
    adapter = adapter_config(path)
    check_model_dir(path, adapter)  # one line naming a damaged file, before any weight loads
    base = path if adapter is None else adapter["base_model_name_or_path"]
    return ResolvedModel(resolve_base(base), path, adapter)


def model_meta(model: str | Path | None) -> ModelMeta:
    """The task schemas and windows of `model` (a bare base has none: open label sets)."""
    return ModelMeta.load(resolve_model_dir(model)) if is_model_dir(model) else ModelMeta()


def adapter_config(path: Path) -> dict[str, Any] | None:
    """A LoRA output directory's adapter_config.json (None for full weights)."""
    adapter = path / "adapter_config.json"
    if not adapter.exists():
        return None
    return read_json_object(adapter)


def with_pad_token(tokenizer: Any) -> Any:
    """`tokenizer` with a pad token for batching (EOS when it names none)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(path: Path) -> Any:
    """The tokenizer saved in `path`, with a pad token."""
    from transformers import AutoTokenizer

    return with_pad_token(AutoTokenizer.from_pretrained(path))


def has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists()


DTYPES = ("auto", "float32", "bfloat16")


def check_device(device: Any) -> None:
    """A device torch can use here, or one line naming it (`cuda` on a machine without CUDA
    was an AssertionError from inside torch)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise GiellmError(f"device: {device!r} is not a device (cpu, cuda, cuda:N)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise GiellmError(f"device: {device!r} asked for, but torch sees no CUDA device here")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise GiellmError(f"device: {device!r}, but this machine has {count} CUDA devices")
    elif parsed.type != "cpu":
        raise GiellmError(f"device: {device!r}: giellm runs on cpu or cuda")


def load_model(
    model: str | Path | None = None, *, device: str = "cpu", dtype: str = "auto"
) -> tuple[Any, Any, ModelMeta]:
    """(model, tokenizer, meta) ready for generation; adapters are merged into their base.

    `model` is a giellm model directory (full weights or a LoRA adapter), None (the default:
    `default_model()`), `tiny` (the from-scratch model), or any base `bases.resolve_base`
    knows (`gemma-3-270m`, a `.gguf` file, an HF directory, a hub id), which then runs with
    open label sets. `dtype` "auto": see `auto_dtype`.
    """
    import torch

    check_device(device)
    if dtype not in DTYPES:
        raise GiellmError(f"dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    resolved = resolve_model(model)
    source = resolved.source
    torch_dtype = getattr(torch, auto_dtype(device, source) if dtype == "auto" else dtype)
    # tokenizers first: a 262k-piece one peaks at ~400 MB while loading, which then does not
    # stack on the weights' own peak
    where = resolved.path or source.name
    logger.debug(f"base {source.name} ({source.kind}: {source.path}) in {torch_dtype} on {device}")
    try:
        tokenizer = resolved.load_tokenizer()
        lm = load_base(source, dtype=torch_dtype)
        if resolved.adapter is not None:
            from peft import PeftModel

            logger.debug(f"adapter {resolved.path}, merged into the base")

            lm = PeftModel.from_pretrained(lm, resolved.path).merge_and_unload()
    except GiellmError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        # a config whose values do not fit its weights (sizes, an unknown activation)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise GiellmError(
            f"{where}: cannot load the model ({type(err).__name__}: {first})"
        ) from None
    if tokenizer.eos_token_id is None:  # generation could never end: every request fails
        raise GiellmError(f"{where}: its tokenizer has no end-of-sequence token (eos_token)")
    lm.to(device).eval()
    from giellm.models.fused import fuse_norms  # torch: not for the data commands

    fused = fuse_norms(lm)  # frozen from here on
    logger.debug(f"{fused} norms fused")
    return lm, tokenizer, resolved.meta


def auto_dtype(device: str, source: BaseSource) -> str:
    """bfloat16 on GPUs, and on CPUs with native bfloat16 for GGUF bases; else float32.

    A GGUF base is already quantized far more coarsely than bfloat16 rounds, and on an
    AVX512-BF16 CPU bfloat16 halves the memory of weights and KV cache and runs Gemma 3 270M
    1.8x faster (stockmark dev: F1 0.691 vs 0.690, 512 of 534 predictions identical;
    results/gemma_cpu.json). The small from-scratch models keep the float32 they were checked in.
    """
    if device != "cpu":
        return "bfloat16"
    return "bfloat16" if source.kind == "gguf" and bf16_native("cpu") else "float32"


def bf16_native(device: str) -> bool:
    """Does `device` run bfloat16 matmuls natively (AMX / AVX512-BF16 CPUs, recent GPUs)?"""
    import torch

    if device != "cpu":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    return bool(native())
