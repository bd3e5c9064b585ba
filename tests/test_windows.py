"""Long texts: windows cover the text, and cropping then merging gives the record back."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from giellm.data.registry import load
from giellm.layout.windows import crop, merge, window_bounds
from giellm.schema import Example


@given(length=st.integers(0, 2000), size=st.integers(1, 300), data=st.data())
def test_windows_cover_the_text_with_the_overlap(
    length: int, size: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(0, size - 1))
    bounds = window_bounds(length, size, overlap)
    assert bounds[0][0] == 0 and bounds[-1][1] == length
    assert all(end - start == min(size, length) for start, end in bounds)
    for (_, end), (start, _) in itertools.pairwise(bounds):
        assert end - start >= overlap  # every span up to `overlap` long is whole in some window


def test_bad_window_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        window_bounds(10, 5, 5)


def _long_record(records: list[Example]) -> Example:
    """Real records joined into one long text, their entities shifted along."""
    text, entities = "", []
    for ex in records:
        for e in ex.entities:
            entities.append(
                e.model_copy(update={"start": e.start + len(text), "end": e.end + len(text)})
            )
        text += ex.text
    return Example(id="long", task="NER", text=text, entities=tuple(entities))


def test_crop_then_merge_restores_a_long_record(data_dir: Path) -> None:
    record = _long_record(load("stockmark", "dev", "NER", data_dir)[:30])
    overlap = max(e.end - e.start for e in record.entities)
    bounds = window_bounds(len(record.text), overlap + 80, overlap)
    assert len(bounds) > 10
    parts = [(start, crop(record, start, end)) for start, end in bounds]
    merged = merge(record.model_copy(update={"entities": ()}), parts)
    assert sorted(merged.entities, key=lambda e: e.start) == sorted(
        record.entities, key=lambda e: e.start
    )


def test_merge_votes_the_label_and_unions_event_arguments(data_dir: Path) -> None:
    source = Example(id="x", task="TC", text="あいうえお")
    parts = [(0, source.model_copy(update={"label": lab})) for lab in ["a", "b", "b", None]]
    assert merge(source, parts).label == "b"
    tie = [(0, source.model_copy(update={"label": lab})) for lab in ["a", "b"]]
    assert merge(source, tie).label == "a"  # ties go to the earliest window (the lead)

    pas = next(
        ex
        for ex in load("kwdlc", "dev", "PAS", data_dir)
        if any(len(ev.arguments) > 1 for ev in ex.events)
    )
    event = next(ev for ev in pas.events if len(ev.arguments) > 1)
    first = pas.model_copy(
        update={"events": (event.model_copy(update={"arguments": event.arguments[:1]}),)}
    )
    second = pas.model_copy(
        update={"events": (event.model_copy(update={"arguments": event.arguments[1:]}),)}
    )
    merged = merge(pas.model_copy(update={"events": ()}), [(0, first), (0, second)])
    assert merged.events == (event,)
