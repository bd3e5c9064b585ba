"""Events (EE): `type:trigger(role:arg,…)` items in text order of their triggers, e.g.
`<>買収:買収した(買収者:A社,対象:B社)`. Arguments are placed at the occurrence nearest their
trigger. `Events(typed=False)` is the predicate layout (see `predicates`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from giellm.families.base import Item, Reading, allowed, register
from giellm.layout.text import (
    Placer,
    entity_placer,
    escape,
    split_unescaped,
    unescape,
    unescaped_positions,
)
from giellm.schema import Argument, Event, Example
from giellm.tasks import LabelSchema

_ARGUMENTS = '"(" (arg ("," arg)*)? ")"'


class Events:
    """Triggers with role-labelled arguments; `typed`: each event also names its type."""

    field = "events"
    ordered = True

    def __init__(self, name: str, *, typed: bool) -> None:
        self.name, self.typed = name, typed
        if typed:
            self.grammar_start: tuple[Any, ...] = ("lit", "evtype", b"")
            self.grammar_names: tuple[str, ...] = ("evtype", "role")
            self.ebnf_item = f'evtype ":" span marker? {_ARGUMENTS}'
        else:
            self.grammar_start = ("span", "trig", None, False, 0)
            self.grammar_names = ("role",)
            self.ebnf_item = f"span marker? {_ARGUMENTS}"

    def encode(self, example: Example) -> list[str]:
        triggers = entity_placer(example.text)
        args = Placer(example.text, sequential=False, exclusive=False)
        items = []
        for ev in example.events:
            head = triggers.write(ev.trigger)
            if self.typed:
                head = f"{escape(ev.type or '')}:{head}"
            inner = ",".join(
                f"{escape(a.role)}:{args.write(a, ev.trigger.start)}" for a in ev.arguments
            )
            items.append(f"{head}({inner})")
        return items

    def decode(self, items: list[str], reading: Reading) -> dict[str, Any]:
        triggers = entity_placer(reading.text)
        args = Placer(reading.text, sequential=False, exclusive=False)
        found = (self._event(item, reading, triggers, args) for item in items)
        return {"events": [ev for ev in found if ev is not None]}

    def _event(self, item: str, reading: Reading, triggers: Placer, args: Placer) -> Event | None:
        score = reading.score_of(item)  # taken first: every occurrence uses up its own
        opens = unescaped_positions(item, "(")
        head, inner = (item[: opens[0]], item[opens[0] + 1 :]) if opens else (item, "")
        closes = unescaped_positions(inner, ")")
        if closes:
            inner = inner[: closes[-1]]
        etype = None
        if self.typed:
            parts = split_unescaped(head, ":", 1)
            if len(parts) < 2 or not unescape(parts[0]).strip():
                reading.drop(item, "no event type")
                return None
            etype, head = unescape(parts[0]).strip(), parts[1]
            if not allowed(etype, reading.schema.event_types):
                reading.drop(item, "unknown event type")
                return None
        trigger = triggers.read(head)
        if trigger is None:
            reading.drop(item, "trigger not in text")
            return None
        arguments = self._arguments(inner, trigger.start, reading, args)
        return Event(trigger=trigger, type=etype, arguments=tuple(arguments), score=score)

    @staticmethod
    def _arguments(inner: str, anchor: int, reading: Reading, args: Placer) -> list[Argument]:
        arguments: list[Argument] = []
        for raw in split_unescaped(inner, ",") if inner.strip() else []:
            score = reading.score_of(raw)
            parts = split_unescaped(raw, ":", 1)
            role = unescape(parts[0]).strip() if len(parts) == 2 else ""
            if not role or not allowed(role, reading.schema.roles):
                reading.drop(raw, "unknown role")
                continue
            span = args.read(parts[1], anchor)
            if span is None:
                reading.drop(raw, "argument not in text")
                continue
            if any((a.role, a.start, a.end) == (role, span.start, span.end) for a in arguments):
                reading.drop(raw, "repeated argument")  # small models loop: `ガ:トヨタ` 21 times
                continue
            arguments.append(Argument(role=role, score=score, **span.model_dump()))
        return arguments

    def metric_items(self, example: Example) -> Iterator[Item]:
        for ev in example.events:
            trigger = (ev.trigger.start, ev.trigger.end)
            yield (f"trigger:{ev.type}" if ev.type else "trigger", *trigger)
            for a in ev.arguments:
                yield (f"argument:{a.role}", *trigger, a.start, a.end)

    def describe(self, schema: LabelSchema) -> list[str]:
        return []  # the few-shot baseline's prompts name no event types or roles (as reported)


register(Events("events", typed=True))
