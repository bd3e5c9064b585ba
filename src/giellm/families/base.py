"""The contract of a task family and its registry.

A family is one way of writing word-level items in a target (see `giellm.layout.format`): how a
record's items are encoded, how generated items are decoded back (forgivingly), where an item
starts in the constrained-decoding automaton and which names it uses, its EBNF rule for vLLM,
its metric items and its lines in a few-shot prompt. Each family is one module that registers
itself, like spacy-llm's tasks: a new family is one new file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from giellm.errors import GiellmError
from giellm.schema import Example
from giellm.tasks import LabelSchema

Item = tuple[Any, ...]  # a metric item: its type key first, then offsets


@dataclass
class Reading:
    """What decoding one generated target needs: the source text, the label sets, and what
    could not be used (one human-readable line each)."""

    text: str
    schema: LabelSchema
    dropped: list[str] = field(default_factory=list)
    # generated piece (an item, an event argument) -> the scores of its occurrences, in order
    scores: dict[str, list[float]] = field(default_factory=dict)

    def drop(self, item: str, why: str) -> None:
        self.dropped.append(f"{why}: {item!r}")

    def score_of(self, piece: str) -> float | None:
        """The score of the next use of a generated piece (None when decoding unscored text)."""
        queue = self.scores.get(piece)
        return queue.pop(0) if queue else None


def allowed(value: str, values: frozenset[str] | None) -> bool:
    """Is `value` in a closed set (None: the set is open)?"""
    return values is None or value in values


class Family(Protocol):
    """One task family's layout, grammar, EBNF and metric items."""

    @property
    def name(self) -> str:
        """As in `Task.family`."""

    @property
    def field(self) -> str | None:
        """The `Example` field its items fill; None: a text-level label only."""

    @property
    def ordered(self) -> bool:
        """Items are written in text order, each starting after the previous one."""

    @property
    def grammar_start(self) -> tuple[Any, ...] | None:
        """The automaton place where an item starts (`giellm.constraints.automaton`)."""

    @property
    def grammar_names(self) -> tuple[str, ...]:
        """The closed name sets its items use: etype, rtype, evtype, role."""

    @property
    def ebnf_item(self) -> str | None:
        """The EBNF rule of one item (`giellm.constraints.ebnf`)."""

    def encode(self, example: Example) -> list[str]:
        """The record's items as layout strings."""
        ...

    def decode(self, items: list[str], reading: Reading) -> dict[str, Any]:
        """Generated item strings -> `Example` fields; what cannot be used goes to `reading`."""
        ...

    def metric_items(self, example: Example) -> Iterator[Item]:
        """The record's items as compared by the metrics (strictly, by offsets)."""
        ...

    def describe(self, schema: LabelSchema) -> list[str]:
        """Lines for a few-shot prompt: the names its items may use."""
        ...


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise GiellmError(f"unknown task family {name!r}; known: {', '.join(FAMILIES)}") from None
