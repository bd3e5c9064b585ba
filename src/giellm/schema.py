"""The record every stage reads and writes: `Example` and its spans (see DESIGN.md).

Offsets are Python character offsets into `Example.text`, end exclusive, and are checked on
construction: `text[start:end] == span.text` always holds for a valid record. Lists are kept in
one canonical order (by position) so that two records with the same content compare equal.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "Argument",
    "Entity",
    "Event",
    "Example",
    "Relation",
    "Span",
    "ValidationError",
    "example_from_dict",
    "example_to_dict",
]


def unpaired_surrogate(text: str, name: str = "text") -> str | None:
    """Why `text` is not valid Unicode (a lone UTF-16 surrogate, e.g. from JSON "\\ud800")."""
    for i, char in enumerate(text):
        if "\ud800" <= char <= "\udfff":
            return f"{name} has an unpaired surrogate U+{ord(char):04X} at character {i}"
    return None


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class Span(_Record):
    """A piece of the text: its surface string and where it stands."""

    text: str = Field(min_length=1)
    start: StrictInt = Field(ge=0)  # strict: true and "3" are not offsets
    end: StrictInt = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Span:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be greater than start ({self.start})")
        if self.end - self.start != len(self.text):
            raise ValueError(
                f"end - start ({self.end - self.start}) differs from len(text) ({len(self.text)})"
            )
        return self


# a prediction's confidence: the geometric mean of its tokens' probabilities (docs/format.md)
Score = Annotated[float, Field(ge=0, le=1)]


class Entity(Span):
    """A typed span (named entity, mention)."""

    type: str = Field(min_length=1)
    score: Score | None = None


class Argument(Span):
    """An event argument (or a predicate's case slot) filled by a span."""

    role: str = Field(min_length=1)
    score: Score | None = None


class Relation(_Record):
    """A directed, typed link from a head span to a tail span."""

    head: Span
    type: str = Field(min_length=1)
    tail: Span
    score: Score | None = None


class Event(_Record):
    """A trigger span, an optional event type (None for predicates) and its arguments."""

    trigger: Span
    type: str | None = None
    arguments: tuple[Argument, ...] = ()
    score: Score | None = None

    @field_validator("arguments", mode="after")
    @classmethod
    def _sort_arguments(cls, value: tuple[Argument, ...]) -> tuple[Argument, ...]:
        return tuple(sorted(value, key=lambda a: (a.start, a.end, a.role)))


def _span_key(span: Span) -> tuple[int, int]:
    return (span.start, span.end)


class Example(_Record):
    """One text with its task, text-level label and word-level annotations (or predictions)."""

    id: str = Field(min_length=1)
    task: str = Field(min_length=1)
    text: str
    label: str | None = None
    label_score: Score | None = None
    entities: tuple[Entity, ...] = ()
    relations: tuple[Relation, ...] = ()
    events: tuple[Event, ...] = ()

    @field_validator("text", mode="after")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty")
        if bad := unpaired_surrogate(value):
            raise ValueError(bad)
        return value

    @field_validator("entities", mode="after")
    @classmethod
    def _sort_entities(cls, value: tuple[Entity, ...]) -> tuple[Entity, ...]:
        return tuple(sorted(value, key=lambda e: (e.start, e.end, e.type)))

    @field_validator("relations", mode="after")
    @classmethod
    def _sort_relations(cls, value: tuple[Relation, ...]) -> tuple[Relation, ...]:
        return tuple(sorted(value, key=lambda r: (*_span_key(r.head), *_span_key(r.tail), r.type)))

    @field_validator("events", mode="after")
    @classmethod
    def _sort_events(cls, value: tuple[Event, ...]) -> tuple[Event, ...]:
        return tuple(sorted(value, key=lambda e: (*_span_key(e.trigger), e.type or "")))

    @model_validator(mode="after")
    def _valid_unicode(self) -> Example:
        """Every string, not only the text: a lone surrogate in a label or a type passed
        validation and then crashed the writer."""
        names = [("id", self.id), ("task", self.task), ("label", self.label)]
        names += [(f"entities.{i}.type", e.type) for i, e in enumerate(self.entities)]
        names += [(f"relations.{i}.type", r.type) for i, r in enumerate(self.relations)]
        for i, ev in enumerate(self.events):
            names.append((f"events.{i}.type", ev.type))
            names += [
                (f"events.{i}.arguments.{j}.role", a.role) for j, a in enumerate(ev.arguments)
            ]
        for name, value in names:
            if value is not None and (bad := unpaired_surrogate(value, name)):
                raise ValueError(bad)
        return self

    @model_validator(mode="after")
    def _offsets_match_text(self) -> Example:
        for field, span in self.spans():
            if span.end > len(self.text):
                raise ValueError(f"{field}: end {span.end} is past the text ({len(self.text)})")
            found = self.text[span.start : span.end]
            if found != span.text:
                raise ValueError(
                    f"{field}: text[{span.start}:{span.end}] is {found!r}, not {span.text!r}"
                )
        return self

    def spans(self) -> list[tuple[str, Span]]:
        """Every span of the record with its field path (for validation and error messages)."""
        out: list[tuple[str, Span]] = [(f"entities.{i}", e) for i, e in enumerate(self.entities)]
        for i, r in enumerate(self.relations):
            out += [(f"relations.{i}.head", r.head), (f"relations.{i}.tail", r.tail)]
        for i, ev in enumerate(self.events):
            out.append((f"events.{i}.trigger", ev.trigger))
            out += [(f"events.{i}.arguments.{j}", a) for j, a in enumerate(ev.arguments)]
        return out


def example_to_dict(example: Example) -> dict[str, Any]:
    """The JSONL form: empty lists and null event types are left out, `label` is always there."""
    data = example.model_dump(exclude_defaults=True)
    data.setdefault("label", None)
    order = ["id", "task", "text", "label", "label_score", "entities", "relations", "events"]
    return {key: data[key] for key in order if key in data}


def example_from_dict(data: Any) -> Example:
    """Validate one JSON object into an `Example` (raises pydantic's ValidationError)."""
    return Example.model_validate(data)
