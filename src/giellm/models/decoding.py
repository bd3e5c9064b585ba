"""Greedy decoding with continuous batching on any Hugging Face causal LM.

`generate` runs a batch until its longest row ends, so short rows wait. Here finished rows
leave the batch (and its KV cache) once a quarter of the batch has finished, and waiting prompts
take their places: they are prefilled together, their cache is left-padded to the running
batch's length (or the batch's to theirs) and the two are joined along the batch axis. Every row
keeps its own positions and attention mask, so its tokens do not depend on who shares its batch.
The cache writes each step into spare room instead of copying itself (`DynamicLayer` concatenates).

Joining caches needs plain per-layer key/value tensors. Sliding-window layers (Gemma 3: 512)
are plain ones while every sequence is shorter than the window, which extraction windows are;
a model whose cache needs other layers runs batch after batch with the stock cache instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import transformers
from packaging.version import Version

from giellm.errors import GiellmError
from giellm.models.sequences import pad_batch

# the transformers releases (major, minor) the test suite has run on: the growing cache below
# subclasses its cache internals, which change between minor releases
TESTED_TRANSFORMERS = ((5, 24),)


def check_transformers(version: str = transformers.__version__) -> None:
    """One line naming the installed version where it is not one the tests have proved."""
    if Version(version).release[:2] not in TESTED_TRANSFORMERS:
        tested = ", ".join(f"{a}.{b}.x" for a, b in TESTED_TRANSFORMERS)
        raise GiellmError(
            f"transformers {version} is installed; giellm's decoding is tested with {tested} "
            f"only (pip install 'transformers>=5.24,<5.25')"
        )


check_transformers()

from transformers import DynamicCache  # noqa: E402  (after the version check)
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer  # noqa: E402

_CANDIDATES = 32  # top tokens a guided row tries before its guide walks the whole vocabulary
_PREFILL_ROWS = 8  # prompts prefilled together: fewer pad positions than one wide prefill
_REFILL_SHARE = 4  # waiting prompts join once 1/_REFILL_SHARE of the batch's rows are free
_DROP_SHARE = 4  # finished rows leave once they are 1/_DROP_SHARE of the batch (a cache copy)


class Guide(Protocol):
    """Picks a row's next token among the model's ranked candidates (`constraints.TokenGuide`)."""

    def choose(self, ranked: Sequence[int], scores: Any) -> int: ...


@dataclass
class _Batch:
    """The rows being generated: prompt index, KV cache, attention mask, last position, token."""

    rows: list[int]
    cache: Any
    mask: torch.Tensor
    last: torch.Tensor  # [rows, 1] position of each row's latest token
    pending: list[int]  # each row's chosen token, not yet fed to the model


def _forward_keywords(model: Any) -> tuple[str, dict[str, Any]]:
    """The cache keyword this transformers version takes, and the other fixed arguments."""
    params = inspect.signature(model.forward).parameters
    extra: dict[str, Any] = {"use_cache": True}
    if "logits_to_keep" in params:  # logits for the last position only
        extra["logits_to_keep"] = 1
    return ("cache" if "cache" in params else "past_key_values"), extra


class _GrowingLayer(DynamicLayer):  # type: ignore[misc]
    """A `DynamicLayer` kept in a buffer with spare room, right-aligned.

    Appending a step, dropping the left columns and joining batches then copy the cache at most
    once (`DynamicLayer` concatenates, copying the whole cache every step).
    """

    # columns of room kept free: a regrow copies the layer once per `spare` steps; 64 instead
    # of 16 held 170 MB more at batch 64 (534 stockmark dev: peak RSS 2,376 vs 2,207 MiB)
    spare = 16
    room: tuple[torch.Tensor, torch.Tensor] | None = None
    start = end = 0  # the used columns: room[..., start:end]

    def _show(self) -> None:
        assert self.room is not None
        self.keys, self.values = (r[:, :, self.start : self.end] for r in self.room)

    def _place(self, parts: list[tuple[torch.Tensor, torch.Tensor]], extra: int) -> None:
        """New room with `parts` stacked by row, right-aligned, zeros to their left."""
        width = max(k.shape[-2] for k, _ in parts)
        first = parts[0][0]
        shape = (sum(k.shape[0] for k, _ in parts), first.shape[1], width + extra, first.shape[-1])
        room = (first.new_empty(shape), first.new_empty(shape))
        row = 0
        for part in parts:
            n, w = part[0].shape[0], part[0].shape[-2]
            for buffer, source in zip(room, part, strict=True):
                buffer[row : row + n, :, : width - w].zero_()  # masked out, but never NaN
                buffer[row : row + n, :, width - w : width] = source
            row += n
        self.room, self.start, self.end = room, 0, width
        self._show()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.room is None:
            self.is_initialized = True
            self.dtype, self.device = key_states.dtype, key_states.device
            self._place([(key_states, value_states)], self.spare)
            return self.keys, self.values
        steps = key_states.shape[-2]
        if self.end + steps > self.room[0].shape[-2]:
            self._place([(self.keys, self.values)], steps + self.spare)
        for buffer, source in zip(self.room, (key_states, value_states), strict=True):
            buffer[:, :, self.end : self.end + steps] = source
        self.end += steps
        self._show()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.room is not None:
            self.room = (self.room[0][indices], self.room[1][indices])
            self._show()

    def drop_left(self, columns: int) -> None:
        self.start += columns
        self._show()

    def join(self, others: Sequence[_GrowingLayer]) -> None:
        self._place([(layer.keys, layer.values) for layer in (self, *others)], self.spare)


def _new_cache(model: Any, span: int) -> Any:
    """A DynamicCache with growing layers where its layers are plain ones.

    A sliding-window layer never slides for sequences of at most `span` < window tokens.
    """
    cache = DynamicCache(config=model.config)
    layers = getattr(cache, "layers", None)
    window = getattr(model.config.get_text_config(), "sliding_window", None) or 0
    plain = (DynamicLayer, DynamicSlidingWindowLayer) if span < window else (DynamicLayer,)
    if layers and all(type(layer) in plain for layer in layers):
        cache.layers = [_GrowingLayer() for _ in layers]
    return cache


def _joinable(cache: Any) -> bool:
    layers = getattr(cache, "layers", None) or []
    return bool(layers) and all(isinstance(layer, _GrowingLayer) for layer in layers)


def _join(batches: list[_Batch]) -> _Batch:
    """One batch of all the rows of `batches` (their caches must be joinable)."""
    into, others = batches[0], batches[1:]
    if not others:
        return into
    width = max(b.mask.shape[1] for b in batches)
    for layer, *rest in zip(into.cache.layers, *(b.cache.layers for b in others), strict=True):
        layer.join(rest)
    into.mask = torch.cat(
        [torch.nn.functional.pad(b.mask, (width - b.mask.shape[1], 0)) for b in batches]
    )
    into.last = torch.cat([b.last for b in batches])
    into.rows = [r for b in batches for r in b.rows]
    into.pending = [t for b in batches for t in b.pending]
    return into


def _keep(batch: _Batch, keep: list[int]) -> None:
    """Drop the rows not in `keep`, then the columns no remaining row attends to."""
    if len(keep) < len(batch.rows):
        index = torch.tensor(keep, dtype=torch.long, device=batch.mask.device)
        batch.cache.batch_select_indices(index)
        batch.mask, batch.last = batch.mask[index], batch.last[index]
        batch.rows = [batch.rows[k] for k in keep]
        batch.pending = [batch.pending[k] for k in keep]
    used = batch.mask.any(dim=0).nonzero()
    first = int(used[0]) if len(used) else 0
    if first and _joinable(batch.cache):
        for layer in batch.cache.layers:
            layer.drop_left(first)
        batch.mask = batch.mask[:, first:]


class _SubsetScores:
    """One row's scores over a token subset, indexed by vocabulary ids (-inf outside it)."""

    def __init__(self, values: torch.Tensor, head: _OutputHead) -> None:
        self.values, self.head = values, head

    def __len__(self) -> int:
        return self.head.size

    def __getitem__(self, ids: Any) -> torch.Tensor:
        where = self.head.position[torch.as_tensor(ids, dtype=torch.long)]
        return self.values[where.clamp(min=0)].masked_fill(where < 0, float("-inf"))


class _OutputHead:
    """The output projection restricted to the tokens in `vocab` (see `model.output_vocab`)."""

    def __init__(self, model: Any, vocab: Sequence[int]) -> None:
        layer = model.get_output_embeddings()
        device = layer.weight.device
        self.size = int(layer.weight.shape[0])
        self.ids = torch.as_tensor(vocab, dtype=torch.long, device=device)
        self.weight = layer.weight[self.ids]
        bias = getattr(layer, "bias", None)
        self.bias = None if bias is None else bias[self.ids]
        self.position = torch.full((self.size,), -1, dtype=torch.long)
        self.position[self.ids.cpu()] = torch.arange(len(self.ids))
        self.softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of the subset's tokens (no softcapping: it keeps the order greedy needs)."""
        out = hidden @ self.weight.T
        return out if self.bias is None else out + self.bias


def choose(
    logits: torch.Tensor, guides: list[Guide] | None, head: _OutputHead | None = None
) -> list[int]:
    """Greedy picks per row; a guided row takes the best token its guide allows.

    With `head`, `logits` cover only its tokens; picks are mapped back to vocabulary ids.
    """
    if guides is None:
        picks = logits.argmax(-1)
        return (picks if head is None else head.ids[picks]).tolist()  # type: ignore[no-any-return]
    ranked = logits.topk(min(_CANDIDATES, logits.shape[-1]), dim=-1).indices
    if head is not None:
        ranked = head.ids[ranked]
    rows = ranked.tolist()
    return [
        g.choose(r, logits[b] if head is None else _SubsetScores(logits[b], head))
        for b, (g, r) in enumerate(zip(guides, rows, strict=True))
    ]


def chosen_logprobs(
    logits: torch.Tensor,
    picks: Sequence[int],
    head: _OutputHead | None = None,
    masks: torch.Tensor | None = None,
) -> list[float]:
    """log p of each row's chosen token under the softmax of its logits (with `head`: over
    its tokens, after the softcapping `logits` skip; with `masks`: over each row's own part
    of them), for the items' scores."""
    scores = logits.float()
    if head is not None and head.softcap:
        scores = torch.tanh(scores / head.softcap) * head.softcap
    if masks is not None:
        scores = scores.masked_fill(~masks, float("-inf"))
    index = torch.as_tensor(picks, dtype=torch.long)
    if head is not None:
        index = head.position[index]
    index = index.to(scores.device)[:, None]
    return scores.log_softmax(-1).gather(-1, index)[:, 0].tolist()  # type: ignore[no-any-return]


def greedy(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    pad_id: int,
    eos_id: int,
    max_tokens: int,
    batch_size: int,
    guides: Sequence[Guide] | None = None,
    position_limit: int | None = None,
    on_done: Callable[[int, list[int], bool, list[float]], None] | None = None,
    stop_ids: frozenset[int] = frozenset(),
    vocab: Sequence[int] | None = None,
    end_ids: frozenset[int] = frozenset(),
    row_vocab: Sequence[Any] | None = None,
) -> list[tuple[list[int], bool]]:
    """Greedy continuations of `prompts`: (new ids before EOS, ended with EOS) per prompt.

    `stop_ids` end a row as `eos_id` does (instruction-tuned Gemma ends turns with
    `<end_of_turn>`); like EOS they are not part of the output. `end_ids` end a row too but are
    kept in it (tokens holding a stop string: the caller cuts the text at the string).

    Prompts join in the order given (sort them by length for tight batches). A row's budget is
    `max_tokens`, cut so its prompt and output fit `position_limit`. `on_done(i, ids, ended,
    logprobs)` is called as soon as prompt i is finished (logprobs: of each chosen token).
    `vocab`: the only token ids the guides can allow (all of them, EOS included); logits are
    then computed for these alone; `row_vocab` (one boolean mask over `vocab` per prompt, the
    part its own grammar can use) is what each row's chosen-token probabilities are normalised
    over, so they do not depend on the other prompts.
    """
    budgets = [
        max_tokens if position_limit is None else max(1, min(max_tokens, position_limit - len(p)))
        for p in prompts
    ]
    head = None if vocab is None or guides is None else _OutputHead(model, vocab)
    stops = frozenset({eos_id}) | stop_ids
    run = _Generation(model, prompts, budgets, pad_id, stops, guides, head, on_done, end_ids)
    if head is not None and row_vocab is not None:
        run.row_vocab = [torch.as_tensor(m, dtype=torch.bool) for m in row_vocab]
    with torch.inference_mode():
        run.until_done(batch_size)
    return list(zip(run.outputs, run.ended, strict=True))


class _Generation:
    """The state of one `greedy` call: every prompt's output so far and the running batch."""

    def __init__(
        self,
        model: Any,
        prompts: Sequence[Sequence[int]],
        budgets: list[int],
        pad_id: int,
        stops: frozenset[int],
        guides: Sequence[Guide] | None,
        head: _OutputHead | None,
        on_done: Callable[[int, list[int], bool, list[float]], None] | None,
        end_ids: frozenset[int] = frozenset(),
    ) -> None:
        self.model, self.prompts, self.budgets = model, prompts, budgets
        self.end_ids = end_ids
        self.row_vocab: list[torch.Tensor] | None = None  # per prompt, a mask over the head
        self.pad_id, self.stops, self.guides = pad_id, stops, guides
        self.head, self.on_done = head, on_done
        # with an output head the body gives hidden states and the head the logits
        self.body = model if head is None else model.base_model
        self.cache_key, self.extra = _forward_keywords(self.body)
        self.device = next(model.parameters()).device
        self.outputs: list[list[int]] = [[] for _ in prompts]
        self.logprobs: list[list[float]] = [[] for _ in prompts]
        self.ended = [False] * len(prompts)
        self.finished = [False] * len(prompts)
        self.span = max((len(p) + b for p, b in zip(prompts, budgets, strict=True)), default=0)

    def until_done(self, batch_size: int) -> None:
        """Prefill waiting prompts into the free rows, step, repeat until every row ended."""
        # other caches cannot be joined: their prompts are prefilled as one batch to the end
        group = _PREFILL_ROWS if _joinable(_new_cache(self.model, self.span)) else batch_size
        waiting = list(range(len(self.prompts)))
        batch: _Batch | None = None
        while waiting or batch is not None:
            free = batch_size - (0 if batch is None else len(batch.rows))
            can_join = batch is None or _joinable(batch.cache)
            if waiting and can_join and free >= max(1, batch_size // _REFILL_SHARE):
                taken, waiting = waiting[:free], waiting[free:]
                chunks = [self.prefill(taken[k : k + group]) for k in range(0, len(taken), group)]
                joining = [b for b in ([] if batch is None else [batch]) + chunks if b.rows]
                batch = _join(joining) if joining else None
            if batch is None:
                continue
            if not batch.rows:
                batch = None
                continue
            batch.mask = torch.nn.functional.pad(batch.mask, (0, 1), value=1)
            batch.last = batch.last + 1
            pending = torch.tensor(batch.pending, device=self.device)[:, None]
            self.step(batch, pending, batch.last)
            if not batch.rows:
                batch = None

    def prefill(self, taken: list[int]) -> _Batch:
        """A new batch of `taken` prompts, run through the model, with their first tokens."""
        padded, masks = pad_batch([self.prompts[r] for r in taken], self.pad_id, left=True)
        mask = torch.tensor(masks, device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = _new_cache(self.model, self.span)
        new = _Batch(taken, cache, mask, positions[:, -1:], [self.pad_id] * len(taken))
        self.step(new, torch.tensor(padded, device=self.device), positions)
        return new

    def step(self, target: _Batch, ids: torch.Tensor, positions: torch.Tensor) -> None:
        """Run the model on `ids` and choose each live row's next token.

        Finished rows stay (fed a pad) until a quarter of the batch has finished, then leave
        together: dropping rows copies the whole cache.
        """
        out = self.body(
            input_ids=ids,
            attention_mask=target.mask,
            position_ids=positions,
            **{self.cache_key: target.cache},
            **self.extra,
        )
        live = [b for b, r in enumerate(target.rows) if not self.finished[r]]
        if self.head is None:
            logits = out.logits[live, -1]
        else:
            logits = self.head.logits(out.last_hidden_state[live, -1])
        guides = self.guides
        row_guides = None if guides is None else [guides[target.rows[b]] for b in live]
        picks = choose(logits, row_guides, self.head)
        masks = None
        if self.row_vocab is not None:
            masks = torch.stack([self.row_vocab[target.rows[b]] for b in live]).to(logits.device)
        logprobs = chosen_logprobs(logits, picks, self.head, masks)
        for b, token, logprob in zip(live, picks, logprobs, strict=True):
            self._take(target, b, token, logprob)
        keep = [b for b, r in enumerate(target.rows) if not self.finished[r]]
        if len(target.rows) - len(keep) >= max(1, len(target.rows) // _DROP_SHARE):
            _keep(target, keep)

    def _take(self, target: _Batch, b: int, token: int, logprob: float) -> None:
        """Row `b` of `target` chose `token`: append it, or end the row."""
        r = target.rows[b]
        stop = token in self.stops
        if stop:
            self.ended[r] = True
        else:
            self.outputs[r].append(token)
            self.logprobs[r].append(logprob)
            self.ended[r] = token in self.end_ids
        target.pending[b] = self.pad_id if stop else token
        if self.ended[r] or len(self.outputs[r]) >= self.budgets[r]:
            self.finished[r] = True
            if self.on_done is not None:
                self.on_done(r, self.outputs[r], self.ended[r], self.logprobs[r])
