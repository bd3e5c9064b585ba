"""Training a byte-level BPE tokenizer on Japanese text, and reading any tokenizer as bytes.

The embedded model needs its own tokenizer (no pretrained Japanese vocabulary installs offline).
Byte-level BPE, as GPT-2 and Qwen2 use, can encode any string, so no input is ever `<unk>`.
The layout's separators (`< > ; : , ( ) # \\` and newlines) are split off before BPE so a
separator never fuses with a span: generation then ends a span on a clean token boundary.

`token_bytes` turns any HF tokenizer's vocabulary into raw bytes (byte-level BPE, SentencePiece
with byte fallback, or plain pieces): the constrained decoder works on bytes, so it handles a
Japanese character split over several tokens the same way for every architecture.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
_SEPARATORS = r"[<>;:,()#\\\n]"


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path) -> Any:
    """Train byte-level BPE on `texts` and save it as an HF fast tokenizer in `out_dir`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SEPARATORS), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    fast.model_max_length = 1 << 20
    fast.save_pretrained(out_dir)
    return fast


@cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-ins for bytes, reversed (the ByteLevel pre-tokenizer's alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return decoder is not None and "ByteLevel" in repr(decoder)


def special_ids(tokenizer: Any) -> set[int]:
    """Every id the tokenizer marks special: the named ones and every added special token.

    Gemma marks 6,249 tokens special (`<unused*>`, `<start_of_turn>` …) but names only five;
    read as text they would let the grammar accept what decoding then drops.
    """
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    marked = {int(i) for i, token in added.items() if getattr(token, "special", False)}
    return set(tokenizer.all_special_ids) | marked


def token_bytes(tokenizer: Any) -> list[bytes | None]:
    """Each token id's raw bytes as it appears in decoded text; None for special tokens."""
    specials = special_ids(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    byte_level = _is_byte_level(tokenizer)
    table = _byte_decoder()
    out: list[bytes | None] = []
    for token_id, piece in enumerate(pieces):
        if token_id in specials or piece is None:
            out.append(None)
        elif byte_level:
            raw = [table.get(c) for c in piece]
            out.append(None if None in raw else bytes(b for b in raw if b is not None))
        elif match := _BYTE_FALLBACK.match(piece):
            out.append(bytes([int(match.group(1), 16)]))
        else:
            out.append(piece.replace("\u2581", " ").encode("utf-8"))
    return out
