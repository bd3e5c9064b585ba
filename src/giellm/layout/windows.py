"""Long texts: overlapping character windows, and merging per-window results back.

A model sees at most `size` characters of input at once. Longer texts are cut into windows that
overlap by `overlap` characters (so an entity cut at one window's edge is whole in the next),
each window is extracted on its own, and the results are shifted back to offsets in the whole
text and merged: duplicates from the overlaps collapse, the text-level label is the majority
vote of the windows (ties go to the earliest window, which holds the title or lead).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TypeVar

from giellm.schema import Argument, Entity, Event, Example, Relation, Span
from giellm.tasks import label_only

S = TypeVar("S", bound=Span)


def window_bounds(length: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) of each window over a text of `length` characters; one when it fits."""
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("need size > 0 and 0 <= overlap < size")
    if length <= size:
        return [(0, length)]
    step = size - overlap
    starts = [*range(0, length - size, step), length - size]
    return [(s, s + size) for s in dict.fromkeys(starts)]


def task_window_bounds(
    text: str, task: str, size: int, overlap: int, label_windows: int
) -> list[tuple[int, int]]:
    """The windows a model reads of `text` for `task`, in training and inference alike:
    label-only tasks (TC, SA) read the first `label_windows` only (title and lead)."""
    bounds = window_bounds(len(text), size, overlap)
    return bounds[:label_windows] if label_only(task) else bounds


def _shift(span: S, delta: int) -> S:
    return span.model_copy(update={"start": span.start + delta, "end": span.end + delta})


def _inside(span: Span, start: int, end: int) -> bool:
    return start <= span.start and span.end <= end


def crop(example: Example, start: int, end: int) -> Example:
    """The record restricted to text[start:end]: items wholly inside, offsets made local."""

    def keep(span: S) -> S:
        return _shift(span, -start)

    events = []
    for ev in example.events:
        if _inside(ev.trigger, start, end):
            args = tuple(keep(a) for a in ev.arguments if _inside(a, start, end))
            events.append(ev.model_copy(update={"trigger": keep(ev.trigger), "arguments": args}))
    return example.model_copy(
        update={
            "text": example.text[start:end],
            "entities": tuple(keep(e) for e in example.entities if _inside(e, start, end)),
            "relations": tuple(
                r.model_copy(update={"head": keep(r.head), "tail": keep(r.tail)})
                for r in example.relations
                if _inside(r.head, start, end) and _inside(r.tail, start, end)
            ),
            "events": tuple(events),
        }
    )


def merge(source: Example, parts: Sequence[tuple[int, Example]]) -> Example:
    """Per-window predictions (window start, record) -> one record over the whole text."""
    votes = Counter(p.label for _, p in parts if p.label is not None)
    label = None
    if votes:
        best = max(votes.values())
        label = next(p.label for _, p in parts if p.label is not None and votes[p.label] == best)
    entities: list[Entity] = []
    relations: dict[tuple[int, int, str, int, int], Relation] = {}
    events: dict[tuple[int, int], Event] = {}
    for start, part in parts:
        earlier = list(entities)  # a window may nest entities; only clashes across windows go
        for e in part.entities:
            e = _shift(e, start)
            if not any(_overlaps(e, other) for other in earlier):
                entities.append(e)
        for r in part.relations:
            r = r.model_copy(update={"head": _shift(r.head, start), "tail": _shift(r.tail, start)})
            relations.setdefault((r.head.start, r.head.end, r.type, r.tail.start, r.tail.end), r)
        for ev in part.events:
            trigger = _shift(ev.trigger, start)
            args: tuple[Argument, ...] = tuple(_shift(a, start) for a in ev.arguments)
            key = (trigger.start, trigger.end)
            if key in events:  # seen in the overlap: keep the union of its arguments
                seen = {(a.role, a.start, a.end): a for a in events[key].arguments}
                args = tuple({**{(a.role, a.start, a.end): a for a in args}, **seen}.values())
            events[key] = ev.model_copy(update={"trigger": trigger, "arguments": args})
    voters = [p.label_score for _, p in parts if p.label == label and p.label_score is not None]
    data = source.model_dump()
    data.update(
        label=label,
        label_score=sum(voters) / len(voters) if label is not None and voters else None,
        entities=[e.model_dump() for e in entities],
        relations=[r.model_dump() for r in relations.values()],
        events=[ev.model_dump() for ev in events.values()],
    )
    return Example.model_validate(data)


def _overlaps(a: Span, b: Span) -> bool:
    return a.start < b.end and b.start < a.end
