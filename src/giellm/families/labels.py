"""Label-only tasks (TC, SA): the target is the text-level label alone, `<社会>`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from giellm.families.base import Item, Reading, register
from giellm.schema import Example
from giellm.tasks import LabelSchema


class Labels:
    name = "labels"
    field = None
    ordered = False
    grammar_start = None
    grammar_names: tuple[str, ...] = ()
    ebnf_item = None

    def encode(self, example: Example) -> list[str]:
        return []

    def decode(self, items: list[str], reading: Reading) -> dict[str, Any]:
        for item in items:
            reading.drop(item, "unexpected item for a label-only task")
        return {}

    def metric_items(self, example: Example) -> Iterator[Item]:
        return iter(())

    def describe(self, schema: LabelSchema) -> list[str]:
        return []


register(Labels())
