"""Extraction with a trained model: windows, batched greedy generation, decoding, merging.

Records are cut into the windows the model was trained on, windows of similar prompt length are
batched with left padding (so every row's next token sits in the last column and the KV cache is
reused step to step), each row is constrained to its task's layout by default, and the decoded
windows are merged back into one record per input, in input order, with the same ids.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from giellm.constraints.automaton import VocabIndex
from giellm.data.registry import get_format
from giellm.errors import GiellmError
from giellm.inference.backends import Backend, Layout, OnDone, Rows, open_backend
from giellm.layout.format import decode
from giellm.layout.scores import Scorer, at_least, check_threshold, scorer, token_spans
from giellm.layout.windows import merge, task_window_bounds
from giellm.models.loading import check_device
from giellm.models.sequences import prompt_ids
from giellm.models.tokenizer import token_bytes
from giellm.schema import Example
from giellm.tasks import LabelSchema, get_task


@dataclass(frozen=True)
class Prediction:
    """One predicted record and what its decoding left out."""

    example: Example
    dropped: tuple[str, ...] = ()
    truncated: int = 0  # windows whose output hit max_new_tokens before it ended


@dataclass(frozen=True)
class Completion:
    """Free text generated after a prompt (the OpenAI-compatible routes serve these)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


@dataclass
class _Window:
    record: int
    start: int
    source: Example
    ids: list[int]


@dataclass
class Stats:
    """Running totals of a prediction job (for the CLI summary and benchmarks)."""

    records: int = 0
    windows: int = 0
    generated_tokens: int = 0
    dropped: int = 0
    truncated: int = 0
    tasks: dict[str, int] = field(default_factory=dict)


def check_settings(batch_size: int, max_new_tokens: int | None) -> None:
    """Refuse settings that would loop forever or silently mean something else."""
    _count("batch_size", batch_size)
    if max_new_tokens is not None:
        _count("max_new_tokens", max_new_tokens)


def _count(name: str, value: Any) -> None:
    """`value` must be a whole number of at least 1 (not True, not "8", not 0)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GiellmError(f"{name} must be a whole number of at least 1, not {value!r}")


def dataset_schema(dataset: str, task: str) -> LabelSchema:
    """A dataset's label sets for `task`; an error (not silently open label sets) when the
    dataset has none for it. Needs no model: callers check it before one loads."""
    fmt = get_format(dataset)
    name = get_task(task).name
    if name not in fmt.schemas:
        known = ", ".join(fmt.schemas) or "none"
        raise GiellmError(f"schema {dataset!r} has no label sets for {name} (it has: {known})")
    return fmt.schema(name)


class Extractor:
    """A loaded model that extracts any of its tasks from Japanese text.

    >>> ex = Extractor()                                   # the default: Gemma 270M + adapter
    >>> ex.extract("日立製作所の山田太郎社長が会見した。", task="NER")
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "cpu",
        constrained: bool = True,
        batch_size: int = 64,
        max_new_tokens: int | None = None,
        dtype: str = "auto",
        backend: Backend | None = None,
    ) -> None:
        """`backend`: where generation runs (default: transformers, loading `model` on
        `device`); see `giellm.inference.backends`."""
        check_settings(batch_size, max_new_tokens)  # before the slow part
        if backend is None:
            check_device(device)
        self.backend = backend or open_backend(model, device=device, dtype=dtype)
        self.tokenizer, self.meta = self.backend.tokenizer, self.backend.meta
        self._configure(self.backend.device, constrained, batch_size, max_new_tokens)

    @property
    def model(self) -> Any:
        """The transformers model (None for a backend that holds its own, such as vLLM)."""
        return getattr(self.backend, "model", None)

    def _configure(
        self, device: str, constrained: bool, batch_size: int, max_new_tokens: int | None
    ) -> None:
        """The generation settings and counters (after the backend has loaded `meta`)."""
        check_settings(batch_size, max_new_tokens)
        self.device = device
        self.constrained = constrained
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens or self.meta.max_new_tokens
        self.stats = Stats()
        self._trie: VocabIndex | None = None
        self._stop_tokens: dict[tuple[str, ...], frozenset[int]] = {}

    def configured(
        self,
        *,
        constrained: bool | None = None,
        batch_size: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Extractor:
        """A copy with other generation settings sharing this one's loaded model, tokenizer
        and vocabulary index (no second load); its own metadata copy and counters."""
        twin = copy.copy(self)
        twin.meta = copy.copy(self.meta)
        twin._configure(
            self.device,
            self.constrained if constrained is None else constrained,
            self.batch_size if batch_size is None else batch_size,
            self.max_new_tokens if max_new_tokens is None else max_new_tokens,
        )
        twin._trie = self._trie
        return twin

    @property
    def trie(self) -> VocabIndex:
        if self._trie is None:
            self._trie = VocabIndex(token_bytes(self.tokenizer), self.tokenizer.eos_token_id)
        return self._trie

    def _tokens_holding(self, stop: tuple[str, ...]) -> frozenset[int]:
        """Tokens whose text holds a stop string: a row ends there instead of running on to
        `max_tokens` (a stop string cut over two tokens is still cut from the text after)."""
        if not stop:
            return frozenset()
        if stop not in self._stop_tokens:
            needles = [s.encode() for s in stop]
            self._stop_tokens[stop] = frozenset(
                t for t, p in enumerate(self.trie.pieces) if p and any(n in p for n in needles)
            )
        return self._stop_tokens[stop]

    def _scorer(self, ids: Sequence[int], logprobs: list[float] | None) -> Scorer | None:
        """Scores over the generated text of `ids` (see `giellm.layout.scores`), if it has any."""
        if logprobs is None:
            return None
        pieces = self.trie.pieces
        spans = token_spans([(pieces[t] or b"") if t < len(pieces) else b"" for t in ids])
        return None if spans is None else scorer(spans, logprobs)

    def text_of(self, ids: Sequence[int]) -> str:
        """The text of generated ids: the bytes the grammar checked, special tokens left out.

        (A tokenizer's own `decode` may differ: SentencePiece drops a leading space, and
        `skip_special_tokens` drops tokens the grammar read as text.)
        """
        pieces = self.trie.pieces
        raw = b"".join(pieces[t] or b"" for t in ids if t < len(pieces))
        return raw.decode("utf-8", errors="replace")

    def position_limit(self) -> int | None:
        """How many positions (prompt + output) the model takes, if it says."""
        return self.backend.position_limit()

    def schema(self, task: str, schema: LabelSchema | str | None = None) -> LabelSchema:
        """The label sets to constrain `task` to: given, a dataset's by name, or the model's."""
        if isinstance(schema, LabelSchema):
            return schema
        if schema is not None and not isinstance(schema, str):
            raise GiellmError(
                f"schema: expected a dataset name or a LabelSchema, got {type(schema).__name__}"
            )
        name = get_task(task).name
        if isinstance(schema, str):
            return dataset_schema(schema, name)
        return self.meta.schemas.get(name, LabelSchema())

    def extract(
        self,
        texts: str | Sequence[str],
        task: str,
        schema: LabelSchema | str | None = None,
        threshold: float | None = None,
    ) -> list[Example]:
        """Extract `task` from each text; returns one record per text (ids "0", "1", …).
        Items scored below `threshold` are left out (see `giellm.layout.scores`)."""
        if isinstance(texts, str):
            texts = [texts]
        name = get_task(task).name
        records = [Example(id=str(i), task=name, text=t) for i, t in enumerate(texts)]
        return [p.example for p in self.predict(records, schema=schema, threshold=threshold)]

    def predict(
        self,
        records: Iterable[Example],
        *,
        schema: LabelSchema | str | None = None,
        chunk: int = 256,
        on_record: Callable[[Prediction], None] | None = None,
        on_windows: Callable[[int, int], None] | None = None,
        threshold: float | None = None,
    ) -> Iterator[Prediction]:
        """Predictions for `records` (their gold fields are ignored), lazily and in order.

        `on_windows(planned, generated)` follows the work inside long records: once per chunk
        with the windows it was cut into, then after every generated batch. Items scored below
        `threshold` are left out.
        """
        if chunk < 1:
            raise GiellmError(f"chunk must be at least 1, not {chunk}")
        check_threshold(threshold)
        it = iter(records)
        while batch := list(islice(it, chunk)):
            yield from self._predict_chunk(batch, schema, on_windows, on_record, threshold)

    def complete(
        self, prompts: Sequence[str], *, max_tokens: int = 64, stop: Sequence[str] = ()
    ) -> list[Completion]:
        """Greedy free-text continuations of raw prompts, batched; no layout constraint.

        A prompt longer than the model's window keeps its end (the part next to the answer).
        """
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise GiellmError("prompts: expected a list of strings (one prompt: [prompt])")
        _count("max_tokens", max_tokens)
        tok = self.tokenizer
        limit = self.position_limit()
        keep = None if limit is None else max(1, limit - max_tokens)
        rows = []
        for prompt in prompts:
            ids = tok(prompt, add_special_tokens=False)["input_ids"]
            if tok.bos_token_id is not None and ids[:1] != [tok.bos_token_id]:
                ids = [tok.bos_token_id, *ids]  # a chat template may have written it already
            rows.append(ids if keep is None else ids[-keep:])
        out: list[Completion] = []
        ends = self._tokens_holding(tuple(s for s in stop if s))
        generated = self.backend.free_rows(rows, max_tokens, self.batch_size, ends)
        for ids, (row, ended) in zip(rows, generated, strict=True):
            text = tok.decode(row, skip_special_tokens=True)
            cuts = [text.index(s) for s in stop if s and s in text]
            if cuts:
                text, ended = text[: min(cuts)], True
            reason = "stop" if ended else "length"
            out.append(Completion(text, len(ids), len(row), reason))
            self.stats.generated_tokens += len(row)
        return out

    # --- internals ---------------------------------------------------------------------------

    def label_scores(
        self, records: Sequence[Example], schema: LabelSchema | str | None = None
    ) -> list[dict[str, float]]:
        """Per record, the model's probability of each label of its task's closed label set
        (TC, SA; the genre of fkc NER records), summing to 1: each label's whole target start
        `<label>` (with the end of sequence for label-only tasks) scored after the prompt,
        normalised over the set, averaged over the windows the label is read from."""
        import torch

        from giellm.models.scoring import continuation_logprobs
        from giellm.tasks import label_only

        if self.model is None:
            raise GiellmError("label scores need the transformers backend (--backend hf)")
        eos = self.tokenizer.eos_token_id
        by_task: dict[str, tuple[list[str], list[list[int]]]] = {}  # labels and their targets

        def targets_of(task: str) -> tuple[list[str], list[list[int]]]:
            if task not in by_task:
                labels = sorted(self.schema(task, schema).labels or ())
                ending = [eos] if label_only(task) else []
                by_task[task] = (
                    labels,
                    [
                        [
                            *self.tokenizer(f"<{label}>", add_special_tokens=False)["input_ids"],
                            *ending,
                        ]
                        for label in labels
                    ],
                )
            return by_task[task]

        pairs, owners, sets = [], [], []
        for i, rec in enumerate(records):
            labels, targets = targets_of(rec.task)
            if not labels:
                raise GiellmError(
                    f"record {rec.id!r}: {rec.task} has no closed label set here; give a "
                    "schema (e.g. --schema livedoor) to score its labels"
                )
            for start, end in self.windows_of(rec.text, rec.task):
                prompt = prompt_ids(self.tokenizer, rec.text[start:end], rec.task)
                pairs += [(prompt, target) for target in targets]
                owners.append(i)
            sets.append(labels)
        scores = continuation_logprobs(
            self.model, pairs, pad_id=self.tokenizer.pad_token_id or eos, batch_size=16
        )
        totals = [torch.zeros(len(labels), dtype=torch.float64) for labels in sets]
        offset = 0
        for i in owners:  # one softmax per window over the set, then their mean
            width = len(sets[i])
            totals[i] += torch.tensor(scores[offset : offset + width]).softmax(-1)
            offset += width
        return [
            dict(zip(labels, (total / total.sum()).tolist(), strict=True))
            for labels, total in zip(sets, totals, strict=True)
        ]

    def windows_of(self, text: str, task: str) -> list[tuple[int, int]]:
        """[start, end) of the windows the model reads of `text` for `task` (as in training:
        label-only tasks read the first `label_windows` only)."""
        meta = self.meta
        return task_window_bounds(
            text, task, meta.window_chars, meta.window_overlap, meta.label_windows
        )

    def _windows(self, records: Sequence[Example]) -> list[_Window]:
        out = []
        for i, rec in enumerate(records):
            for start, end in self.windows_of(rec.text, rec.task):
                part = Example(id=rec.id, task=rec.task, text=rec.text[start:end])
                out.append(_Window(i, start, part, prompt_ids(self.tokenizer, part.text, rec.task)))
        return out

    def _predict_chunk(
        self,
        records: Sequence[Example],
        schema: LabelSchema | str | None,
        on_windows: Callable[[int, int], None] | None = None,
        on_record: Callable[[Prediction], None] | None = None,
        threshold: float | None = None,
    ) -> list[Prediction]:
        """Predictions for `records`, each handed to `on_record` as soon as it and every
        record before it are done (windows run longest first), so a killed job keeps them."""
        windows = self._windows(records)
        schemas = {rec.task: self.schema(rec.task, schema) for rec in records}
        ordered = sorted(windows, key=lambda w: -len(w.ids))
        waiting = [0] * len(records)
        for w in windows:
            waiting[w.record] += 1
        parts: list[list[tuple[int, Example]]] = [[] for _ in records]
        dropped: list[list[str]] = [[] for _ in records]
        truncated = [0] * len(records)
        out: list[Prediction] = []

        def window_done(
            index: int, row: list[int], ended: bool, logprobs: list[float] | None
        ) -> None:
            w = ordered[index]
            self.stats.generated_tokens += len(row)
            decoded = decode(
                self.text_of(row), w.source, schemas[w.source.task], self._scorer(row, logprobs)
            )
            parts[w.record].append((w.start, decoded.example))
            dropped[w.record] += decoded.dropped
            truncated[w.record] += not ended
            waiting[w.record] -= 1
            while len(out) < len(records) and not waiting[len(out)]:
                i, rec = len(out), records[len(out)]
                source = Example(id=rec.id, task=rec.task, text=rec.text)
                merged = merge(source, sorted(parts[i], key=lambda part: part[0]))
                if threshold is not None:
                    merged = at_least(merged, threshold)
                out.append(Prediction(merged, tuple(dropped[i]), truncated[i]))
                self.stats.tasks[rec.task] = self.stats.tasks.get(rec.task, 0) + 1
                if on_record is not None:
                    on_record(out[-1])
            if on_windows is not None:
                on_windows(0, 1)

        if on_windows is not None:
            on_windows(len(windows), 0)
        self._window_rows(ordered, schemas, window_done)
        self.stats.records += len(records)
        self.stats.windows += len(windows)
        self.stats.dropped += sum(len(d) for d in dropped)
        self.stats.truncated += sum(truncated)
        return out

    def _window_rows(
        self,
        windows: list[_Window],
        schemas: dict[str, LabelSchema],
        on_done: OnDone | None,
    ) -> Rows:
        """(generated ids, ended) per window, each also given to `on_done(index, ids, ended,
        logprobs)` as soon as it ends."""
        layouts = None
        if self.constrained:
            layouts = [
                Layout(w.source.task, schemas[w.source.task], w.source.text) for w in windows
            ]
        prompts = [w.ids for w in windows]
        return self.backend.window_rows(
            prompts, layouts, self.max_new_tokens, self.batch_size, self.trie, on_done
        )


def open_extractor(
    model: str | Path | None = None, *, backend: str = "hf", **options: Any
) -> Extractor:
    """An extractor on the chosen backend: "hf" (transformers; CPU or GPU) or "vllm" (GPU).
    Its settings are checked before the backend loads."""
    settings = {
        k: options.pop(k) for k in ("constrained", "batch_size", "max_new_tokens") if k in options
    }
    check_settings(settings.get("batch_size", 64), settings.get("max_new_tokens"))
    if backend == "vllm" and "batch_size" in settings:
        options["batch_size"] = settings["batch_size"]  # vLLM's sequences in flight
    return Extractor(backend=open_backend(model, backend=backend, **options), **settings)
