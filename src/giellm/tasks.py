"""The task registry: each task's Instruction Word and the word-level field it fills.

Every task may carry a text-level label (when its dataset has one): that is the Mutual
Reinforcement Effect setting, where e.g. a complaint's genre and its entities are learned
together. The label sets are per dataset (`LabelSchema`), so the same task can serve several.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from giellm.errors import GiellmError

Family = Literal["labels", "entities", "relations", "events", "predicates"]


@dataclass(frozen=True)
class Task:
    """A task: its name, the Instruction Word appended to the input, and what it extracts."""

    name: str
    instruction: str
    family: Family  # how its items are written: see `giellm.families`
    description: str


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("TC", "テキスト分類", "labels", "text classification (text-level label only)"),
        Task("SA", "感情分析", "labels", "sentiment analysis (text-level polarity only)"),
        Task("NER", "固有表現抽出", "entities", "named entity recognition: type:span items"),
        Task("RE", "関係抽出", "relations", "relation extraction: head,relation,tail items"),
        Task("EE", "イベント抽出", "events", "event extraction: type:trigger(role:arg,…)"),
        Task(
            "PAS", "述語項構造解析", "predicates", "predicate-argument structure: pred(case:arg,…)"
        ),
    ]
}


def get_task(name: str) -> Task:
    """Look a task up by name (case-insensitive), with a clear error for an unknown one."""
    task = TASKS.get(name.upper())
    if task is None:
        raise GiellmError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return task


def _frozen(values: Iterable[str] | None, name: str) -> frozenset[str] | None:
    """A label set from a list of strings; a bare string ("abc" is not three labels), a number
    or a list holding non-strings is an error naming the parameter."""
    if values is None:
        return None
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise GiellmError(f"{name}: expected a list of strings, got {values!r}")
    found = list(values)
    wrong = next((v for v in found if not isinstance(v, str)), None)
    if wrong is not None:
        raise GiellmError(f"{name}: expected a list of strings, found {wrong!r}")
    return frozenset(found)


@dataclass(frozen=True)
class LabelSchema:
    """The closed label sets of one dataset and task; None means "any value is accepted".

    `labels` is the text-level label set; an empty set means the dataset has no text-level label.
    """

    labels: frozenset[str] | None = None
    entity_types: frozenset[str] | None = None
    relation_types: frozenset[str] | None = None
    event_types: frozenset[str] | None = None
    roles: frozenset[str] | None = None

    @classmethod
    def of(
        cls,
        *,
        labels: Iterable[str] | None = None,
        entity_types: Iterable[str] | None = None,
        relation_types: Iterable[str] | None = None,
        event_types: Iterable[str] | None = None,
        roles: Iterable[str] | None = None,
    ) -> LabelSchema:
        return cls(
            _frozen(labels, "labels"),
            _frozen(entity_types, "entity_types"),
            _frozen(relation_types, "relation_types"),
            _frozen(event_types, "event_types"),
            _frozen(roles, "roles"),
        )

    def as_dict(self) -> dict[str, list[str] | None]:
        """Sorted lists for display and JSON (None stays None)."""
        return {
            name: None if value is None else sorted(value) for name, value in vars(self).items()
        }


# the label set a task's own labels come from: what `labels` restricts
LABEL_FIELD = {
    "labels": "labels",
    "entities": "entity_types",
    "relations": "relation_types",
    "events": "event_types",
    "predicates": "roles",
}


def restrict(schema: LabelSchema, task: str, labels: Iterable[str]) -> LabelSchema:
    """`schema` with `task`'s own label set (entity types for NER, the labels for TC, …) cut
    to `labels`. It restricts what the model may write; it cannot teach it a new label, so a
    label outside the model's set is an error naming the known ones."""
    spec = get_task(task)
    name = LABEL_FIELD[spec.family]
    wanted = _frozen(labels, "labels")
    if not wanted:
        raise GiellmError("labels: give at least one label, or none to keep the model's set")
    known = getattr(schema, name)
    if known is not None and not wanted <= known:
        unknown = ", ".join(sorted(wanted - known))
        raise GiellmError(
            f"labels: {unknown} not among the {name} {spec.name} knows here "
            f"({', '.join(sorted(known))}); labels restrict the model's set, they do not add to it"
        )
    return dataclasses.replace(schema, **{name: wanted})


def label_only(task: str) -> bool:
    """Does the task write a text-level label and no items (TC, SA)?"""
    return get_task(task).family == "labels"
