"""GGUF files as Hugging Face weights: a tensor index read once, then direct dequantization.

transformers can load a GGUF itself (`from_pretrained(dir, gguf_file=...)`), but it parses the
whole file with `gguf.GGUFReader` (about 10 s for Gemma's 262k-token vocabulary) and takes about
100 s on 2 cores for Gemma 3 270M. Here the tensors' names, types, shapes and byte offsets are read
once into a small JSON index; later loads memory-map the file and dequantize each tensor with the
`gguf` package (about 2 s), renamed onto the HF module names. The renaming is known for the
architectures in `_LAYER_NAMES`; any other GGUF goes through transformers' own loader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

INDEX_FILE = "gguf_index.json"

# blk.N.<gguf name> -> model.layers.N.<HF name>, per GGUF architecture
_LAYER_NAMES = {
    "gemma3": {
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "attn_q_norm": "self_attn.q_norm",
        "attn_k_norm": "self_attn.k_norm",
        "attn_norm": "input_layernorm",
        "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    },
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# Gemma's RMSNorm multiplies by (1 + weight); llama.cpp stores the weight with the 1 added
_NORMS_PLUS_ONE = frozenset({"gemma3"})
_ROWS_AT_ONCE = 8192


def supported(architecture: str) -> bool:
    """Can this module load the architecture's tensors (else: transformers' GGUF loader)?"""
    return architecture in _LAYER_NAMES


def read_index(path: Path) -> dict[str, Any]:
    """The architecture and every tensor's (type, shape, offset, bytes), parsed once."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    arch_field = reader.fields["general.architecture"]
    architecture = bytes(arch_field.parts[arch_field.data[0]]).decode()
    tensors = {
        t.name: {
            "type": int(t.tensor_type),
            "shape": [int(d) for d in t.shape],
            "offset": int(t.data_offset),
            "bytes": int(t.n_bytes),
        }
        for t in reader.tensors
    }
    return {"architecture": architecture, "tensors": tensors}


def hf_name(name: str, architecture: str) -> str:
    """The HF parameter name of a GGUF tensor name (`blk.3.attn_q.weight` -> …)."""
    stem, _, kind = name.rpartition(".")
    parts = stem.split(".")
    if parts[0] == "blk" and len(parts) == 3:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[architecture][parts[2]]}.{kind}"
    return f"{_TOP_NAMES[stem]}.{kind}"


def state_dict(path: Path, index: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """HF-named tensors of the GGUF at `path`, dequantized (float32) into tensors of `dtype`.

    Each tensor is read and dequantized a block of rows at a time straight into its final
    tensor: `gguf`'s numpy kernels hold a few float copies of what they work on, and a float32
    copy of the 262k-row embedding (or a memory map of the whole file) would otherwise add
    most of a gigabyte to the loader's peak memory.
    """
    import numpy as np
    import torch
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quant_shape_to_byte_shape

    architecture = index["architecture"]
    plain = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}
    out: dict[str, Any] = {}
    with path.open("rb") as handle:
        for name, info in index["tensors"].items():
            qtype = GGMLQuantizationType(info["type"])
            shape = tuple(reversed(info["shape"]))  # GGUF lists dimensions fastest first
            values = torch.empty(shape, dtype=dtype)
            rows = values.view(-1, shape[-1])
            row_bytes = info["bytes"] // len(rows)
            minus_one = architecture in _NORMS_PLUS_ONE and name.endswith("norm.weight")
            for start in range(0, len(rows), _ROWS_AT_ONCE):
                count = min(_ROWS_AT_ONCE, len(rows) - start)
                handle.seek(info["offset"] + start * row_bytes)
                data = np.frombuffer(handle.read(count * row_bytes), dtype=np.uint8)
                if qtype in plain:
                    block = data.view(plain[qtype]).reshape(count, -1).astype(np.float32)
                else:
                    byte_shape = quant_shape_to_byte_shape((count, shape[-1]), qtype)
                    block = dequantize(data.reshape(byte_shape), qtype)
                if minus_one:
                    block = block - 1
                rows[start : start + count] = torch.from_numpy(block)
            out[hf_name(name, architecture)] = values
    return out


def save_index(index: dict[str, Any], directory: Path) -> None:
    (directory / INDEX_FILE).write_text(json.dumps(index), encoding="utf-8")


def load_index(directory: Path) -> dict[str, Any]:
    index: dict[str, Any] = json.loads((directory / INDEX_FILE).read_text(encoding="utf-8"))
    return index
