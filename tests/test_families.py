"""Task families as units: every task's family is registered and consistent, and a new family is
one new class (here written in the test) that the layout, the grammar, the EBNF and the metrics
all pick up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from giellm.constraints.automaton import OPEN, Grammar
from giellm.constraints.ebnf import layout_grammar
from giellm.evaluation.metrics import items
from giellm.families import FAMILIES, Reading, family_of, project
from giellm.families.base import register
from giellm.layout.format import decode, encode_target
from giellm.layout.text import entity_placer
from giellm.schema import Entity, Example
from giellm.tasks import TASKS, LabelSchema, Task


def test_every_task_has_a_registered_family_that_fills_its_field() -> None:
    assert set(FAMILIES) == {"labels", "entities", "relations", "events", "predicates"}
    for name in TASKS:
        family = family_of(name)
        record = Example(id="0", task=name, text="東京")
        assert project(record, name).task == name
        assert (family.grammar_start is None) == (family.field is None)  # label-only: no items


class Keywords:
    """A family the library does not have: bare spans, `<>東京;大阪`."""

    name = "keywords"
    field = "entities"
    ordered = True
    grammar_start = ("span", "ent", None, False, 0)
    grammar_names: tuple[str, ...] = ()
    ebnf_item = "span marker?"

    def encode(self, example: Example) -> list[str]:
        placer = entity_placer(example.text)
        return [placer.write(e) for e in example.entities]

    def decode(self, items: list[str], reading: Reading) -> dict[str, Any]:
        placer, out = entity_placer(reading.text), []
        for item in items:
            span = placer.read(item)
            if span is None:
                reading.drop(item, "span not in text")
                continue
            out.append(Entity(type="keyword", **span.model_dump()))
        return {"entities": out}

    def metric_items(self, example: Example) -> Iterator[tuple[Any, ...]]:
        return ((e.start, e.end) for e in example.entities)

    def describe(self, schema: LabelSchema) -> list[str]:
        return []


def test_a_new_family_is_one_unit_that_everything_picks_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FAMILIES, "keywords", FAMILIES.get("keywords") or register(Keywords()))
    monkeypatch.setitem(TASKS, "KW", Task("KW", "キーワード", "keywords", "keywords"))  # type: ignore[arg-type]
    text = "東京と大阪と東京"
    gold = Example(
        id="0",
        task="KW",
        text=text,
        entities=(
            Entity(text="大阪", start=3, end=5, type="keyword"),
            Entity(text="東京", start=6, end=8, type="keyword"),
        ),
    )
    target = encode_target(gold)
    assert target == "<>大阪;東京"  # the second 東京 is placed by the rule: no marker needed
    decoded = decode(target, Example(id="0", task="KW", text=text))
    assert decoded.example == gold and decoded.dropped == ()
    grammar, state = Grammar("KW", LabelSchema(), text), OPEN
    for byte in target.encode():
        state = grammar.step(state, byte)  # type: ignore[assignment]
        assert state is not None
    assert grammar.accepts(state)
    assert "item ::= span marker?" in layout_grammar("KW", LabelSchema(), text)
    assert items(gold) == items(decoded.example) and len(items(gold)) == 2
