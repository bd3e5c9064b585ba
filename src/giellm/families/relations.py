"""Relations (RE): `head,relation,tail` items, e.g. `<>ソニー,Subsidiary,ソニー銀行`. Heads are
placed at or after the previous head, tails at their first occurrence; items need not be in text
order (one head may have several tails)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from giellm.families.base import Item, Reading, allowed, register
from giellm.layout.text import Placer, escape, split_unescaped, unescape
from giellm.schema import Example, Relation
from giellm.tasks import LabelSchema


def _placers(text: str) -> tuple[Placer, Placer]:
    return Placer(text, sequential=True, exclusive=False), Placer(
        text, sequential=False, exclusive=False
    )


class Relations:
    name = "relations"
    field = "relations"
    ordered = False
    grammar_start = ("span", "head", None, False, 0)
    grammar_names = ("rtype",)
    ebnf_item = 'span marker? "," rtype "," span marker?'

    def encode(self, example: Example) -> list[str]:
        heads, tails = _placers(example.text)
        return [
            f"{heads.write(r.head)},{escape(r.type)},{tails.write(r.tail)}"
            for r in example.relations
        ]

    def decode(self, items: list[str], reading: Reading) -> dict[str, Any]:
        heads, tails = _placers(reading.text)
        out = []
        for item in items:
            score = reading.score_of(item)  # taken first: every occurrence uses up its own
            parts = split_unescaped(item, ",")
            if len(parts) != 3:
                reading.drop(item, "not head,relation,tail")
                continue
            rtype = unescape(parts[1]).strip()
            if not rtype or not allowed(rtype, reading.schema.relation_types):
                reading.drop(item, "unknown relation type")
                continue
            head, tail = heads.read(parts[0]), tails.read(parts[2])
            if head is None or tail is None:
                reading.drop(item, "span not in text")
                continue
            out.append(Relation(head=head, type=rtype, tail=tail, score=score))
        return {"relations": out}

    def metric_items(self, example: Example) -> Iterator[Item]:
        for r in example.relations:
            yield (f"relation:{r.type}", r.head.start, r.head.end, r.tail.start, r.tail.end)

    def describe(self, schema: LabelSchema) -> list[str]:
        types = schema.relation_types
        return ["Relation types: " + ", ".join(sorted(types))] if types else []


register(Relations())
