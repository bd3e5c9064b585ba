"""Generation backends behind one small Protocol: transformers (`hf`: CPU or GPU) and vLLM
(GPU). The `Extractor` owns windows, decoding and merging; a backend only turns prompt ids into
generated ids, greedily, each window kept to its layout or free."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from giellm.constraints.automaton import VocabIndex
from giellm.models.loading import ModelMeta
from giellm.tasks import LabelSchema

Rows = list[tuple[list[int], bool]]  # per prompt: generated ids (no EOS), ended with EOS
# (index, generated ids, ended, log p of each chosen token or None where a backend has none)
OnDone = Callable[[int, list[int], bool, "list[float] | None"], None]


@dataclass(frozen=True)
class Layout:
    """What constrains one window's output: its task's layout, label sets and text."""

    task: str
    schema: LabelSchema
    text: str


class Backend(Protocol):
    """Generates for an `Extractor`."""

    tokenizer: Any
    meta: ModelMeta
    device: str

    def position_limit(self) -> int | None:
        """How many positions (prompt + output) the model takes, if it says."""
        ...

    def window_rows(
        self,
        prompts: list[list[int]],
        layouts: Sequence[Layout] | None,
        max_tokens: int,
        batch_size: int,
        index: VocabIndex,
        on_done: OnDone | None,
    ) -> Rows:
        """Greedy rows for extraction windows; each kept to its `layouts` entry (None: free).
        `index` is the tokenizer's vocabulary walk; `on_done(i, ids, ended, logprobs)` as
        rows end."""
        ...

    def free_rows(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        batch_size: int,
        end_ids: frozenset[int] = frozenset(),
    ) -> Rows:
        """Greedy rows with no constraint (the completion routes); a row ends early at a token
        of `end_ids` (kept: it holds a stop string), where the backend can."""
        ...


def open_backend(model: Any = None, *, backend: str = "hf", **options: Any) -> Backend:
    """The backend by name: "hf" (transformers; CPU or GPU) or "vllm" (GPU)."""
    from giellm.errors import GiellmError

    if backend == "hf":
        from giellm.inference.backends.hf import HFBackend

        return HFBackend.load(model, **options)
    if backend == "vllm":
        from giellm.inference.backends.vllm import VllmBackend

        options.pop("device", None)
        return VllmBackend(model, **options)
    raise GiellmError(f"unknown backend {backend!r}; use hf or vllm")
