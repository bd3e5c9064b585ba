"""A tiny random Gemma 3 written as a GGUF file, shaped like the packaged Gemma 3 270M.

It has what the real base has and the byte-level-BPE tiny models lack: a SentencePiece-style
vocabulary (`▁` for spaces, `<0xXX>` byte-fallback pieces, control tokens such as
`<start_of_turn>` and `<unused0>`), sliding-window layers, norms stored +1 and quantized
tensors. The vocabulary is a Unigram model trained on the given texts; the GGUF goes through
the same loader (`bases.resolve_base`) as the real file, so tests of the Gemma path take seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Gemma's leading ids: pad, eos, bos, unk, then control tokens the model must never write
CONTROL = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>")
UNUSED = tuple(f"<unused{i}>" for i in range(4))


def unigram_pieces(texts: Iterable[str], vocab_size: int) -> list[tuple[str, float]]:
    """The `vocab_size` best (piece, score) of a Unigram model of `texts`, spaces as `▁`.

    Unigram training must keep every character; the rarer ones are cut afterwards, so the
    tokenizer spells them with byte-fallback pieces, as Gemma does for rare characters.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    texts = list(texts)
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    size = len(set("".join(texts))) + 2 * vocab_size
    trainer = trainers.UnigramTrainer(
        vocab_size=size, special_tokens=[], show_progress=False, max_piece_length=8
    )
    tok.train_from_iterator(texts, trainer)
    vocab = json.loads(tok.to_str())["model"]["vocab"]
    return sorted(((p, float(s)) for p, s in vocab if p), key=lambda ps: -ps[1])[:vocab_size]


@dataclass(frozen=True)
class _Shape:
    hidden: int
    layers: int
    heads: int = 2
    kv_heads: int = 1
    head_dim: int = 32

    @property
    def ffn(self) -> int:
        return 2 * self.hidden


def write_tiny_gemma_gguf(
    texts: Iterable[str],
    path: Path,
    *,
    vocab_size: int = 600,
    hidden: int = 64,
    layers: int = 3,
    sliding_window: int = 512,
    seed: int = 0,
) -> Path:
    """Write a random Gemma 3 GGUF (Q8_0 and Q5_0 matrices, F32 norms) with a trained vocab."""
    from gguf import GGUFWriter, TokenType

    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    learned = [(p, s) for p, s in unigram_pieces(texts, vocab_size) if p not in byte_pieces]
    tokens = [*CONTROL, *UNUSED, *byte_pieces, *(p for p, _ in learned)]
    types = [TokenType.CONTROL] * (len(CONTROL) + len(UNUSED)) + [TokenType.BYTE] * 256
    types += [TokenType.NORMAL] * len(learned)
    scores = [0.0] * (len(tokens) - len(learned)) + [s for _, s in learned]
    shape = _Shape(hidden, layers)
    writer = GGUFWriter(str(path), "gemma3")
    _write_config(writer, shape, sliding_window)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    _write_tensors(writer, shape, len(tokens), seed)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _write_config(writer: Any, shape: _Shape, sliding_window: int) -> None:
    writer.add_name("tiny gemma3")
    writer.add_context_length(2048)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_key_length(shape.head_dim)
    writer.add_value_length(shape.head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(sliding_window)


def _write_tensors(writer: Any, shape: _Shape, vocab: int, seed: int) -> None:
    """Random weights in llama.cpp's Gemma 3 names, quantized as the real file's mix."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    q8, q5 = GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q5_0
    rng = np.random.default_rng(seed)
    hidden, ffn, q_rows = shape.hidden, shape.ffn, shape.heads * shape.head_dim
    kv_rows = shape.kv_heads * shape.head_dim

    def matrix(name: str, rows: int, cols: int, qtype: Any) -> None:
        values = rng.normal(0, 0.05, (rows, cols)).astype(np.float32)
        writer.add_tensor(name, quantize(values, qtype), raw_dtype=qtype)

    def norm(name: str, size: int) -> None:  # stored +1, as llama.cpp writes Gemma norms
        writer.add_tensor(name, (1 + rng.normal(0, 0.1, size)).astype(np.float32))

    matrix("token_embd.weight", vocab, hidden, q8)
    for i in range(shape.layers):
        blk = f"blk.{i}"
        matrix(f"{blk}.attn_q.weight", q_rows, hidden, q5)
        matrix(f"{blk}.attn_k.weight", kv_rows, hidden, q5)
        matrix(f"{blk}.attn_v.weight", kv_rows, hidden, q8)
        matrix(f"{blk}.attn_output.weight", hidden, q_rows, q8)
        matrix(f"{blk}.ffn_gate.weight", ffn, hidden, q5)
        matrix(f"{blk}.ffn_up.weight", ffn, hidden, q5)
        matrix(f"{blk}.ffn_down.weight", hidden, ffn, q8)
        for name in ("attn_q_norm", "attn_k_norm"):
            norm(f"{blk}.{name}.weight", shape.head_dim)
        for name in ("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"):
            norm(f"{blk}.{name}.weight", hidden)
    norm("output_norm.weight", hidden)
