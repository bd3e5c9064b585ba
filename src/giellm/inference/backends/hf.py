"""The transformers backend: any HF causal LM (or GGUF base) on a CPU or GPU, greedy decoding
with continuous batching (`giellm.models.decoding`), each row guided by its layout's byte
automaton and its logits computed over the batch's output vocabulary only."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from giellm.constraints.automaton import Grammar, TokenGuide, VocabIndex
from giellm.constraints.output_vocab import CharIndex
from giellm.inference.backends import Layout, OnDone, Rows
from giellm.models.loading import ModelMeta, load_model


def stop_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every id that ends generation: the tokenizer's EOS and the model's configured ones."""
    ids = {tokenizer.eos_token_id}
    for config in (model.config.get_text_config(), getattr(model, "generation_config", None)):
        value = getattr(config, "eos_token_id", None)
        ids |= set(value) if isinstance(value, list | tuple) else {value}
    return frozenset(i for i in ids if isinstance(i, int))


class HFBackend:
    """A loaded transformers model. `output_vocab`: compute logits over the tokens the
    batch's layouts can allow only (same picks, less work on a 262k vocabulary)."""

    def __init__(self, model: Any, tokenizer: Any, meta: ModelMeta, device: str) -> None:
        self.model, self.tokenizer, self.meta, self.device = model, tokenizer, meta, device
        self.output_vocab = True
        self._chars: CharIndex | None = None

    @classmethod
    def load(
        cls, model: str | Path | None = None, *, device: str = "cpu", dtype: str = "auto"
    ) -> HFBackend:
        loaded, tokenizer, meta = load_model(model, device=device, dtype=dtype)
        return cls(loaded, tokenizer, meta, device)

    def without_output_vocab(self) -> HFBackend:
        """The same model computing logits over the whole vocabulary (for comparisons)."""
        twin = copy.copy(self)
        twin.output_vocab = False
        return twin

    def position_limit(self) -> int | None:
        config = self.model.config.get_text_config()  # multimodal configs keep it in text_config
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(config, name, None)
            if isinstance(value, int):
                return value
        return None

    def window_rows(
        self,
        prompts: list[list[int]],
        layouts: Sequence[Layout] | None,
        max_tokens: int,
        batch_size: int,
        index: VocabIndex,
        on_done: OnDone | None,
    ) -> Rows:
        guides, vocab, masks = None, None, None
        if layouts is not None:
            grammars = [Grammar(w.task, w.schema, w.text) for w in layouts]
            guides = [TokenGuide(index, g) for g in grammars]
            vocab = self._output_vocab(grammars, index) if self.output_vocab else None
            if vocab is not None and self._chars is not None:  # each row's own share of it
                texts = [{g.text.decode()} | (g.names() or set()) for g in grammars]
                masks = self._chars.masks(vocab, texts, always=[index.eos_id])
        return self._greedy(
            prompts, max_tokens, batch_size, guides, on_done, vocab, row_vocab=masks
        )

    def free_rows(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        batch_size: int,
        end_ids: frozenset[int] = frozenset(),
    ) -> Rows:
        return self._greedy(prompts, max_tokens, batch_size, end_ids=end_ids)

    def _output_vocab(self, grammars: Sequence[Grammar], index: VocabIndex) -> Any:
        """The tokens these grammars can allow (None: any, as with an open name set)."""
        names: set[str] = set()
        for grammar in grammars:
            used = grammar.names()
            if used is None:
                return None
            names |= used
        if self._chars is None:
            self._chars = CharIndex(index.pieces)
        texts = {g.text.decode() for g in grammars} | names
        return self._chars.within(texts, always=[index.eos_id])

    def _greedy(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        batch_size: int,
        guides: list[TokenGuide] | None = None,
        on_done: OnDone | None = None,
        vocab: Any = None,
        end_ids: frozenset[int] = frozenset(),
        row_vocab: Any = None,
    ) -> Rows:
        from giellm.models.decoding import greedy  # torch loads only when a model runs

        tok = self.tokenizer
        return greedy(
            self.model,
            prompts,
            pad_id=tok.pad_token_id,
            eos_id=tok.eos_token_id,
            max_tokens=max_tokens,
            batch_size=batch_size,
            guides=guides,
            position_limit=self.position_limit(),
            on_done=on_done,
            stop_ids=stop_ids(self.model, tok),
            vocab=vocab,
            end_ids=end_ids,
            row_vocab=row_vocab,
        )
