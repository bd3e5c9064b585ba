"""livedoor news corpus as JSONL (id, category, url, date, title, body): 9-way classification.

The text is the title and the body on separate lines; the label is the category.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from giellm.data._build import build, check_task
from giellm.data.jsonl import json_objects
from giellm.errors import DataError
from giellm.schema import Example

TASKS = ("TC",)
CATEGORIES = (
    "dokujo-tsushin",
    "it-life-hack",
    "kaden-channel",
    "livedoor-homme",
    "movie-enter",
    "peachy",
    "smax",
    "sports-watch",
    "topic-news",
)


def read(path: Path, task: str = "TC", notes: Counter[str] | None = None) -> Iterator[Example]:
    task = check_task(task, TASKS, "livedoor")
    for number, article in json_objects(path):
        try:
            fields = {
                "id": article["id"],
                "task": task,
                "label": article["category"],
                "text": f"{article['title']}\n{article['body']}",
            }
        except (KeyError, TypeError) as err:
            raise DataError(f"missing field {err}", path=path, line=number) from None
        yield build(fields, path=path, line=number)
