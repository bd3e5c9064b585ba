"""JRTE sentiment polarity TSV (id, label 1/0/-1, text, judges, usage): 3-way sentiment."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from giellm.data._build import build, check_task
from giellm.data.jsonl import lines
from giellm.errors import DataError
from giellm.schema import Example

TASKS = ("SA",)
POLARITY = {"1": "ポジティブ", "0": "ニュートラル", "-1": "ネガティブ"}


def read(path: Path, task: str = "SA", notes: Counter[str] | None = None) -> Iterator[Example]:
    task = check_task(task, TASKS, "jrte")
    for number, raw in lines(path):
        line = raw.rstrip("\r\n")
        if not line:
            continue
        row = line.split("\t")  # no quoting in this format: every tab separates columns
        if len(row) < 3:
            raise DataError(
                f"expected at least 3 tab-separated columns, got {len(row)}",
                path=path,
                line=number,
            )
        if row[1] not in POLARITY:
            raise DataError(
                f"label {row[1]!r} is not one of 1, 0, -1",
                path=path,
                line=number,
                field="label",
            )
        yield build(
            {"id": row[0], "task": task, "label": POLARITY[row[1]], "text": row[2]},
            path=path,
            line=number,
        )
