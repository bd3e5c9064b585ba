"""Is a model directory whole? Checked before loading, so damage is one line naming the file.

A truncated `model.safetensors`, an adapter folder without weights, a `config.json` that is not
JSON or names an unknown `model_type`, a missing `tokenizer.json`: each surfaced as a raw
traceback from safetensors, transformers or peft, some of them misleading ("install
sentencepiece"). These checks read headers only (a few KB), never the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from giellm.errors import GiellmError


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object, or one line naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GiellmError(f"{path}: missing") from None
    except (ValueError, OSError) as err:  # not JSON, not UTF-8, unreadable
        raise GiellmError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise GiellmError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def check_safetensors(path: Path) -> None:
    """The file's header parses and its size is what the header says (no truncation)."""
    if not path.exists():
        raise GiellmError(f"{path}: missing (the model's weights)")
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 2 or 8 + length > size:
            raise GiellmError(f"{path}: truncated or not a safetensors file ({size} bytes)")
        try:
            header = json.loads(handle.read(length))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise GiellmError(
                f"{path}: not a safetensors file (its header does not parse)"
            ) from None
    expected = 8 + length + max(ends, default=0)
    if size != expected:
        raise GiellmError(f"{path}: truncated ({size:,} bytes of {expected:,}); copy it again")


def check_weights(path: Path) -> None:
    """Full weights: one safetensors file, or an index and every shard it names."""
    index = path / "model.safetensors.index.json"
    if index.exists():
        shards = set(read_json_object(index).get("weight_map", {}).values())
        for shard in sorted(shards):
            check_safetensors(path / shard)
    elif not (path / "pytorch_model.bin").exists():
        check_safetensors(path / "model.safetensors")


def check_config(path: Path) -> None:
    """config.json is a JSON object whose model_type this transformers knows."""
    from transformers import CONFIG_MAPPING

    config = read_json_object(path / "config.json")
    kind = config.get("model_type")
    if kind not in CONFIG_MAPPING:
        raise GiellmError(
            f"{path / 'config.json'}: model_type {kind!r} is not one transformers knows"
        )


def check_adapter(path: Path, adapter: dict[str, Any]) -> None:
    """A LoRA folder: its config names a base and a peft type, and its weights are whole."""
    where = path / "adapter_config.json"
    for key in ("base_model_name_or_path", "peft_type"):
        if not isinstance(adapter.get(key), str) or not adapter[key]:
            raise GiellmError(f"{where}: {key} is missing or not a string")
    if (path / "adapter_model.bin").exists():
        return
    check_safetensors(path / "adapter_model.safetensors")


def check_tokenizer(path: Path) -> None:
    """A saved tokenizer has its tokenizer.json (transformers otherwise tries to convert a
    slow tokenizer and asks for sentencepiece)."""
    if (path / "tokenizer_config.json").exists() and not (path / "tokenizer.json").exists():
        raise GiellmError(f"{path / 'tokenizer.json'}: missing (tokenizer_config.json is there)")


def check_model_dir(path: Path, adapter: dict[str, Any] | None) -> None:
    """Everything above for a giellm model directory, before any weight loads."""
    if adapter is None:
        check_config(path)
        check_weights(path)
    else:
        check_adapter(path, adapter)
    check_tokenizer(path)
