"""Stockmark Japanese Wikipedia NER (JSON array of {curid, text, entities[name, span, type]})."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from giellm.data._build import build, check_task
from giellm.data.jsonl import load_json_array
from giellm.errors import DataError
from giellm.schema import Example

TASKS = ("NER",)
ENTITY_TYPES = (
    "人名",
    "法人名",
    "政治的組織名",
    "その他の組織名",
    "地名",
    "施設名",
    "製品名",
    "イベント名",
)


def read(path: Path, task: str = "NER", notes: Counter[str] | None = None) -> Iterator[Example]:
    task = check_task(task, TASKS, "stockmark")
    for index, item in enumerate(load_json_array(path)):
        entities = item.get("entities") or []
        if not isinstance(entities, list):
            raise DataError("expected a list", path=path, record=index, field="entities")
        try:
            spans = [
                {"text": e["name"], "start": e["span"][0], "end": e["span"][1], "type": e["type"]}
                for e in entities
            ]
        except (KeyError, IndexError, TypeError) as err:
            raise DataError(
                f"malformed entity ({err!r})", path=path, record=index, field="entities"
            ) from None
        yield build(
            {
                "id": f"stockmark-{path.stem}-{index:05d}",
                "task": task,
                "text": item.get("text"),
                "entities": spans,
            },
            path=path,
            record=index,
        )
