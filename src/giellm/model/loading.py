"""Loading a trained giellm model (full weights or a LoRA adapter) with its task schemas.

A giellm model directory is an HF model directory plus `giellm.json`: the label sets each task
was trained with (constrained decoding restricts generation to them) and the window size.
A LoRA output directory holds the adapter; its base model is read from `adapter_config.json`
and the adapter is merged for inference speed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from giellm.errors import GiellmError
from giellm.tasks import LabelSchema

META_FILE = "giellm.json"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "default_model"


@dataclass
class ModelMeta:
    """What generation needs to know about a trained model beyond its weights."""

    schemas: dict[str, LabelSchema] = field(default_factory=dict)
    window_chars: int = 256
    window_overlap: int = 48
    max_new_tokens: int = 256
    label_windows: int = 1  # label-only tasks look at the first windows only, as in training

    def to_json(self) -> dict[str, Any]:
        return {
            "schemas": {task: s.as_dict() for task, s in sorted(self.schemas.items())},
            "window_chars": self.window_chars,
            "window_overlap": self.window_overlap,
            "max_new_tokens": self.max_new_tokens,
            "label_windows": self.label_windows,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelMeta:
        schemas = {task: LabelSchema.of(**s) for task, s in data.get("schemas", {}).items()}
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
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


def merge_schemas(schemas: list[LabelSchema]) -> LabelSchema:
    """The union of several datasets' label sets for one task (None if any is open)."""

    def union(name: str) -> frozenset[str] | None:
        values = [getattr(s, name) for s in schemas]
        if any(v is None for v in values):
            return None
        return frozenset().union(*values)

    return LabelSchema(*(union(name) for name in vars(LabelSchema())))


def resolve_model_dir(model: str | Path | None) -> Path:
    """`model` as a directory, defaulting to the embedded model; a clear error if missing."""
    path = DEFAULT_MODEL_DIR if model is None else Path(model)
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise GiellmError(f"{path}: not a model directory (no config.json or adapter_config.json)")
    return path


def adapter_config(path: Path) -> dict[str, Any] | None:
    """A LoRA output directory's adapter_config.json (None for full weights)."""
    adapter = path / "adapter_config.json"
    if not adapter.exists():
        return None
    config: dict[str, Any] = json.loads(adapter.read_text(encoding="utf-8"))
    return config


def load_tokenizer(path: Path) -> Any:
    """The model's tokenizer, with a pad token for batching (EOS when it names none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    model: str | Path | None = None, *, device: str = "cpu"
) -> tuple[Any, Any, ModelMeta]:
    """(model, tokenizer, meta) ready for generation; adapters are merged into their base."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_dir(model)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    adapter = adapter_config(path)
    if adapter is not None:
        from peft import PeftModel

        lm = AutoModelForCausalLM.from_pretrained(adapter["base_model_name_or_path"], dtype=dtype)
        lm = PeftModel.from_pretrained(lm, path).merge_and_unload()
    else:
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    lm.to(device).eval()
    return lm, load_tokenizer(path), ModelMeta.load(path)
