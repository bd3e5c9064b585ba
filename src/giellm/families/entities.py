"""Entities (NER): `type:span` items, in text order, e.g. `<>人名:山田太郎;法人名:日立製作所`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from giellm.families.base import Item, Reading, allowed, register
from giellm.layout.text import entity_placer, escape, split_unescaped, unescape
from giellm.schema import Entity, Example
from giellm.tasks import LabelSchema


class Entities:
    name = "entities"
    field = "entities"
    ordered = True
    grammar_start = ("lit", "etype", b"")
    grammar_names = ("etype",)
    ebnf_item = 'etype ":" span marker?'

    def encode(self, example: Example) -> list[str]:
        placer = entity_placer(example.text)
        return [f"{escape(e.type)}:{placer.write(e)}" for e in example.entities]

    def decode(self, items: list[str], reading: Reading) -> dict[str, Any]:
        placer, out = entity_placer(reading.text), []
        for item in items:
            score = reading.score_of(item)  # taken first: every occurrence uses up its own
            parts = split_unescaped(item, ":", 1)
            if len(parts) < 2:
                reading.drop(item, "no type")
                continue
            etype = unescape(parts[0]).strip()
            if not etype or not allowed(etype, reading.schema.entity_types):
                reading.drop(item, "unknown entity type")
                continue
            span = placer.read(parts[1])
            if span is None:
                reading.drop(item, "span not in text")
                continue
            out.append(Entity(type=etype, score=score, **span.model_dump()))
        return {"entities": out}

    def metric_items(self, example: Example) -> Iterator[Item]:
        for e in example.entities:
            yield (f"entity:{e.type}", e.start, e.end)

    def describe(self, schema: LabelSchema) -> list[str]:
        types = schema.entity_types
        return ["Entity types: " + ", ".join(sorted(types))] if types else []


register(Entities())
