"""Tiny, randomly initialised causal LMs of the architectures GIELLM targets.

Llama (LLaMA2, Swallow), GPT-2 (llm-jp-13b v1) and Qwen2 share one training and generation path;
the tests prove it on models built here in seconds, and the embedded default model is a small
Llama built the same way and then trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCHITECTURES = ("llama", "gpt2", "qwen2")


@dataclass(frozen=True)
class TinySpec:
    """Shape of a from-scratch model; defaults make a test model of about 0.2M parameters."""

    arch: str = "llama"
    hidden: int = 32
    layers: int = 2
    heads: int = 4
    intermediate: int = 64
    max_positions: int = 512


def tiny_config(spec: TinySpec, tokenizer: Any) -> Any:
    """The HF config for `spec`, with the tokenizer's vocabulary and special tokens."""
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if spec.arch == "gpt2":
        return GPT2Config(
            n_embd=spec.hidden,
            n_layer=spec.layers,
            n_head=spec.heads,
            n_inner=spec.intermediate,
            n_positions=spec.max_positions,
            **ids,
        )
    shape = {
        "hidden_size": spec.hidden,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.heads,
        "intermediate_size": spec.intermediate,
        "max_position_embeddings": spec.max_positions,
        "tie_word_embeddings": True,
    }
    if spec.arch == "llama":
        return LlamaConfig(**shape, **ids)
    if spec.arch == "qwen2":
        return Qwen2Config(**shape, **ids)
    raise ValueError(f"unknown architecture {spec.arch!r}; known: {', '.join(ARCHITECTURES)}")


def build_tiny(spec: TinySpec, tokenizer: Any, out_dir: Path | None = None, seed: int = 0) -> Any:
    """A seeded random model of `spec`; saved with its tokenizer when `out_dir` is given."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(spec, tokenizer))
    if out_dir is not None:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return model
