"""Metrics as pure functions: the paper's accuracies and strict span precision/recall/F1.

For gold records g_i and predictions p_i (paired by id):

- text accuracy    = #{i : label(p_i) = label(g_i)} / #{i : g_i has a label}
- word accuracy    = #{i : items(p_i) = items(g_i)} / #{i : the task has word-level items}
- overall accuracy = #{i : label and items both right} / #{i}

`items` is the multiset of a record's word-level items, each compared strictly by offsets:
entity (type, start, end); relation (type, head span, tail span); event trigger (type, span);
event argument (role, its trigger's span, its span). Span scores are micro-averaged counts:
P = tp / #pred, R = tp / #gold, F1 = 2PR / (P + R); a score with a zero denominator is None.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from giellm.errors import GiellmError
from giellm.families import Item, family_of
from giellm.schema import Example
from giellm.tasks import label_only


def items(example: Example) -> Counter[Item]:
    """The record's word-level items as a multiset; the first element names the type key."""
    return Counter(family_of(example.task).metric_items(example))


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(frozen=True)
class Counts:
    """True positives, predicted and gold item counts, with P/R/F1 derived from them."""

    tp: int = 0
    pred: int = 0
    gold: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.pred + other.pred, self.gold + other.gold)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.pred)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.gold)

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "tp": self.tp,
            "pred": self.pred,
            "gold": self.gold,
        }


def span_counts(gold: Counter[Item], pred: Counter[Item]) -> dict[str, Counts]:
    """Per type key: matched, predicted and gold item counts (multiset intersection)."""
    tally: dict[str, list[int]] = {}
    for slot, counter in enumerate((gold & pred, pred, gold)):
        for item, n in counter.items():
            tally.setdefault(item[0], [0, 0, 0])[slot] += n
    return {key: Counts(*tally[key]) for key in sorted(tally)}


@dataclass(frozen=True)
class Report:
    """All figures of one evaluation; `as_dict` is the JSON form `giellm evaluate` prints."""

    records: int
    text_accuracy: float | None
    word_accuracy: float | None
    overall_accuracy: float | None
    micro: Counts
    per_type: dict[str, Counts]
    per_kind: dict[str, Counts] = field(default_factory=dict)
    missing: int = 0
    unmatched: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "text_accuracy": self.text_accuracy,
            "word_accuracy": self.word_accuracy,
            "overall_accuracy": self.overall_accuracy,
            "precision": self.micro.precision,
            "recall": self.micro.recall,
            "f1": self.micro.f1,
            "per_kind": {k: c.as_dict() for k, c in self.per_kind.items()},
            "per_type": {k: c.as_dict() for k, c in self.per_type.items()},
            "missing_predictions": self.missing,
            "unmatched_predictions": self.unmatched,
        }


def score(
    gold: Sequence[Example], pred: Sequence[Example], *, missing: int = 0, unmatched: int = 0
) -> Report:
    """Score predictions against gold records given in the same order (see module doc)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold records but {len(pred)} predictions")
    labelled = label_right = worded = word_right = both_right = 0
    per_type: dict[str, Counts] = {}
    for g, p in zip(gold, pred, strict=True):
        has_words = not label_only(g.task)
        g_items, p_items = items(g), items(p)
        label_ok = g.label == p.label
        words_ok = g_items == p_items
        labelled += g.label is not None
        label_right += g.label is not None and label_ok
        worded += has_words
        word_right += has_words and words_ok
        both_right += label_ok and words_ok
        for key, counts in span_counts(g_items, p_items).items():
            per_type[key] = per_type.get(key, Counts()) + counts
    per_kind: dict[str, Counts] = {}
    for key, counts in per_type.items():
        kind = key.split(":", 1)[0]
        per_kind[kind] = per_kind.get(kind, Counts()) + counts
    return Report(
        records=len(gold),
        text_accuracy=_ratio(label_right, labelled),
        word_accuracy=_ratio(word_right, worded),
        overall_accuracy=_ratio(both_right, len(gold)),
        micro=sum(per_kind.values(), Counts()),
        per_type=per_type,
        per_kind=per_kind,
        missing=missing,
        unmatched=unmatched,
    )


def pair_by_id(
    gold: Iterable[Example], pred: Iterable[Example]
) -> tuple[list[Example], list[Example], list[str], list[str]]:
    """Align predictions to gold by `id`.

    Returns (gold, predictions, missing ids, unmatched ids). A gold record without a prediction
    is paired with an empty prediction (no label, no items), so it counts as wrong.
    """
    gold = list(gold)
    by_id = {p.id: p for p in pred}
    paired, missing = [], []
    for g in gold:
        p = by_id.get(g.id)
        if p is None:
            missing.append(g.id)
            p = Example(id=g.id, task=g.task, text=g.text)
        elif p.task != g.task or p.text != g.text:  # offsets into another text mean nothing
            what = "task" if p.task != g.task else "text"
            raise GiellmError(f"id {g.id!r}: the prediction's {what} differs from the gold's")
        paired.append(p)
    gold_ids = {g.id for g in gold}
    unmatched = [pid for pid in by_id if pid not in gold_ids]
    return gold, paired, missing, unmatched
