"""Training settings: dataclasses with help texts that drive both YAML configs and CLI flags.

A config file that names an unknown key fails loudly (with the key's path), as nanoGPT does.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from giellm.errors import GiellmError
from giellm.models.tiny import TinySpec
from giellm.ranges import bounds, check_ranges, check_windows


def _help(
    text: str,
    default: Any = dataclasses.MISSING,
    *,
    within: dict[str, float] | None = None,
    **kw: Any,
) -> Any:
    """A field with its help text and, for numbers, its range (`within=bounds(...)`)."""
    metadata = {"help": text} | (within or {})
    if default is dataclasses.MISSING:
        return field(metadata=metadata, **kw)
    return field(default=default, metadata=metadata, **kw)


@dataclass
class DataSource:
    """One pool of the multi-task mix: a dataset (shared name, or a file with its format)."""

    dataset: str = _help("format or shared dataset name (stockmark, livedoor, jsonl, …)")
    task: str = _help("task to train on (NER, TC, SA, RE, EE, PAS)")
    weight: float = _help(
        "share of the mix, relative to the other pools", 1.0, within=bounds(above=0)
    )
    train: str | None = _help("training file; default: the shared dataset's train split", None)
    dev: str | None = _help("dev file for evaluation; default: the shared dev split", None)
    text_label: bool = _help(
        "keep the text-level label; false trains word-level items alone (MRE ablation)", True
    )

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class LoraSettings:
    """LoRA (peft) settings; `target_modules: null` adapts every linear layer."""

    r: int = _help("adapter rank", 16, within=bounds(least=1))
    alpha: int = _help("scaling numerator (scale = alpha / r)", 32, within=bounds(above=0))
    dropout: float = _help("dropout on the adapter input", 0.05, within=bounds(least=0, below=1))
    target_modules: list[str] | None = _help("module names to adapt; null: all linear", None)

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class PretrainSettings:
    """Plain language-model pretraining on unlabeled text, before fine-tuning (from scratch)."""

    datasets: list[str] = _help("shared datasets whose train texts form the corpus")
    seq_len: int = _help("tokens per packed training sequence", 256, within=bounds(least=2))
    epochs: float = _help("passes over the corpus", 1.0, within=bounds(above=0))
    max_steps: int | None = _help(
        "stop after this many steps (overrides epochs)", None, within=bounds(least=1)
    )
    batch_size: int = _help("sequences per step", 16, within=bounds(least=1))
    lr: float = _help("peak learning rate", 1e-3, within=bounds(above=0))

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class TrainConfig:
    """Everything `giellm train` needs; YAML keys mirror these field names."""

    output_dir: str = _help("where checkpoints, logs and the final model go")
    data: list[DataSource] = _help("the task pools of the multi-task mix", default_factory=list)
    base_model: str | None = _help(
        "base causal LM: gemma-3-270m (packaged), a .gguf file, an HF directory or hub id; "
        "null builds a tiny one",
        None,
    )
    load_dtype: str = _help(
        "dtype the base is loaded in: float32, bfloat16, or auto (bfloat16 under LoRA where "
        "the device runs it natively: the frozen weights are stored once, never cast per step)",
        "auto",
    )
    attn_implementation: str | None = _help(
        "attention kernel of an HF base: eager, sdpa, flash_attention_2 (null: transformers', "
        "sdpa; on CPUs eager made short LoRA steps 27% faster but its memory grew ~100 MB "
        "a step over a long run)",
        None,
    )
    gradient_checkpointing: bool = _help(
        "recompute activations in the backward pass: less memory, about 30% more time", False
    )
    tiny: TinySpec = _help("shape of the from-scratch model", default_factory=TinySpec)
    vocab_size: int = _help(
        "BPE vocabulary of the from-scratch tokenizer", 8000, within=bounds(least=64)
    )
    pretrain: PretrainSettings | None = _help("LM pretraining stage (from scratch only)", None)
    lora: LoraSettings | None = _help("LoRA settings; null fine-tunes every weight", None)
    init_adapter: str | None = _help(
        "a LoRA adapter to start from instead of a fresh one (a model directory with "
        "adapter_config.json, or `default`: the shipped default model): trains it further on "
        "this mix; its rank and adapted modules must be `lora`'s",
        None,
    )
    total: int | None = _help(
        "records in the mix; default: sum of the pool sizes", None, within=bounds(least=1)
    )
    epochs: float = _help("passes over the mix", 1.0, within=bounds(above=0))
    max_steps: int | None = _help(
        "stop after this many steps (overrides epochs)", None, within=bounds(least=1)
    )
    train_tokens: int | None = _help(
        "stop after about this many training tokens (prompt + target, padding not counted): "
        "the step count follows from an epoch's mean tokens per step, so runs on different "
        "data see the same budget (overrides epochs; not with max_steps)",
        None,
        within=bounds(least=1),
    )
    batch_size: int = _help("records per step (per device)", 16, within=bounds(least=1))
    batch_tokens: int | None = _help(
        "most tokens in one batch, padding included: batches of long rows get fewer rows "
        "(bounds memory); null: batch_size rows always",
        None,
        within=bounds(least=1),
    )
    grad_accum: int = _help("gradient accumulation steps", 1, within=bounds(least=1))
    lr: float = _help("peak learning rate", 2e-4, within=bounds(above=0))
    warmup_ratio: float = _help(
        "share of steps spent warming the learning rate up", 0.03, within=bounds(least=0, below=1)
    )
    weight_decay: float = _help("AdamW weight decay", 0.0, within=bounds(least=0))
    max_len: int = _help(
        "longest training sequence in tokens; longer records are skipped",
        512,
        within=bounds(least=8),
    )
    window_chars: int = _help(
        "input window in characters for long texts", 256, within=bounds(least=1)
    )
    window_overlap: int = _help(
        "overlap between windows in characters (less than window_chars)", 48, within=bounds(least=0)
    )
    label_windows: int = _help(
        "windows per long text kept for label-only tasks (TC, SA)", 1, within=bounds(least=1)
    )
    max_new_tokens: int = _help(
        "generation budget stored with the model", 256, within=bounds(least=1)
    )
    eval_every: int = _help(
        "evaluate dev loss every N steps (0: only at the end)", 200, within=bounds(least=0)
    )
    eval_records: int = _help("dev records used for the dev loss", 200, within=bounds(least=0))
    save_every: int = _help(
        "checkpoint every N steps (0: only the final model)", 0, within=bounds(least=0)
    )
    eval_generate: int = _help(
        "at each checkpoint, extract this many dev records per pool by generation and score "
        "them (F1 / accuracy); the best checkpoint is kept as best/ (0: off)",
        0,
        within=bounds(least=0),
    )
    save_total_limit: int = _help("checkpoints kept", 2, within=bounds(least=1))
    save_dtype: str = _help("dtype of saved full weights: float32, bfloat16 or float16", "float32")
    mixed_precision: str = _help(
        "accelerate mixed precision: no, fp16, bf16, or auto (bf16 where the device runs it "
        "natively: AMX / AVX512-BF16 CPUs, recent GPUs)",
        "auto",
    )
    compile: bool = _help(
        "torch.compile each decoder layer (CPU: fuses the elementwise work; ~1.5x faster steps "
        "for Gemma 270M after ~2 minutes of compiling)",
        False,
    )
    loss_vocab: str = _help(
        "the rows the loss ranks: targets (the token ids of the training targets: one small "
        "head matmul, several times faster), whole (every vocabulary row, at the target "
        "positions only), lm_head (the model's own head over every position: the path before "
        "the training-vocabulary loss, and what several processes run)",
        "targets",
    )
    seed: int = _help("seed for the model, the mix and the batch order", 0)
    log_every: int = _help("log the training loss every N steps", 10, within=bounds(least=1))
    resume: bool = _help("continue a killed run from its newest checkpoint (same config)", False)

    def __post_init__(self) -> None:
        check_ranges(self)
        check_windows(self.window_chars, self.window_overlap)
        if self.init_adapter is not None and self.lora is None:
            raise GiellmError("init_adapter: starts a LoRA run; set lora (the adapter's rank)")
        if self.train_tokens is not None and self.max_steps is not None:
            raise GiellmError("train_tokens and max_steps both set the run's length; give one")
        for name, choices in CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                known = ", ".join(str(c) for c in choices)
                raise GiellmError(f"{name}: {value!r} is not one of {known}")


# settings that are strings with a fixed set of values
CHOICES = {
    "load_dtype": ("auto", "float32", "bfloat16", "float16"),
    "save_dtype": ("float32", "bfloat16", "float16"),
    "mixed_precision": ("auto", "no", "fp16", "bf16"),
    "loss_vocab": ("targets", "whole", "lm_head"),
    "attn_implementation": (None, "eager", "sdpa", "flash_attention_2", "flex_attention"),
}


def _build(cls: Any, data: Any, where: str) -> Any:
    """Instantiate dataclass `cls` from a mapping, recursing into nested dataclasses."""
    if not isinstance(data, dict):
        raise GiellmError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise GiellmError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        values[name] = _coerce(hints[name], value, f"{where}.{name}")
    try:
        return cls(**values)
    except (TypeError, GiellmError) as err:  # a missing key; a value outside its range
        raise GiellmError(f"{where}: {err}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None:
        return None
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return _coerce(args[0], value, where)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            raise GiellmError(f"{where}: expected a list")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise GiellmError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content ({} when empty), with one-line errors for a missing or bad file."""
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise GiellmError(f"{path}: no such config file") from None
    except yaml.YAMLError as err:
        raise GiellmError(f"{path}: not valid YAML ({err})") from None


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a YAML config; `overrides` (non-None values) replace top-level keys."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise GiellmError(f"{path}: expected a mapping, got {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    config: TrainConfig = _build(TrainConfig, data, str(path))
    return config


def config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    config: TrainConfig = _build(TrainConfig, data, where)
    return config


# --- command-line flags, generated from the dataclasses (as trl's HfArgumentParser does) ------

_OWN_FLAGS = frozenset({"data", "resume"})  # `giellm train` declares these itself
_ALIASES = {"lora-targets": "lora-target-modules"}


def _flag_fields(cls: Any = TrainConfig, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """`--flag-name` -> (path of keys, type, help) for every setting, nested ones prefixed."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not prefix and f.name in _OWN_FLAGS:
            continue
        hint = hints[f.name]
        inner = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        path = (*prefix, f.name)
        if dataclasses.is_dataclass(inner):
            out.update(_flag_fields(inner, path))
        else:
            out["-".join(path).replace("_", "-")] = (path, hint, f.metadata.get("help", ""))
    return out


FLAGS = _flag_fields()


def flags_help() -> str:
    """The generated flags, one per line, for `giellm train --help`."""
    lines = [
        f"--{name}: {help_}" if help_ else f"--{name}" for name, (_, _, help_) in FLAGS.items()
    ]
    return "Every config key is also a flag (nested ones prefixed): " + "; ".join(lines)


def _value(hint: Any, raw: str, where: str) -> Any:
    """A flag's text as the value its setting's type wants (lists: comma-separated)."""
    if raw.lower() in ("null", "none"):
        return None
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    if typing.get_origin(base) is list:
        return [part for part in raw.split(",") if part]
    if base is bool:
        if raw.lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise GiellmError(f"{where}: {raw!r} is not true or false")
        return raw.lower() in ("true", "yes", "1")
    if base in (int, float):
        try:
            return base(raw)
        except ValueError:
            raise GiellmError(f"{where}: {raw!r} is not a number") from None
    return raw


def apply_flags(data: dict[str, Any], args: list[str]) -> dict[str, Any]:
    """`data` (a config mapping) with `--name value` / `--name=value` flags set in it."""
    tokens = list(args)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("--"):
            raise GiellmError(f"unexpected argument {token!r}")
        name, _, raw = token[2:].partition("=")
        name = _ALIASES.get(name, name)
        if name not in FLAGS:
            raise GiellmError(f"unknown flag --{name}; see giellm train --help")
        if not raw:
            if not tokens:
                raise GiellmError(f"--{name} needs a value")
            raw = tokens.pop(0)
        path, hint, _ = FLAGS[name]
        node = data
        for key in path[:-1]:  # a nested flag (--lora-r) creates its section (LoRA on)
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = _value(hint, raw, f"--{name}")
    return data
