"""The published MRE-mix CSV layout of the GIELLM paper's datasets (SCNM, TCREE, TCONER …).

Each row holds a source string (the text followed by the dataset's Instruction Word) and a target
string (`<label>` then `;`-separated word-level items). The columns may be named input/output,
source/target or text/label. The target is parsed with giellm's own decoder for the chosen task;
an item written `span:type` instead of `type:span` is accepted. Gold data must not lose items, so
an item that cannot be parsed or placed in the text is an error naming the line and the item.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from giellm.data._build import build, check_task
from giellm.data.jsonl import lines
from giellm.errors import DataError
from giellm.layout.format import decode
from giellm.layout.text import escape, split_unescaped, unescape
from giellm.schema import Example
from giellm.tasks import TASKS as REGISTRY

TASKS = ("TC", "SA", "NER", "RE", "EE", "PAS")
COLUMNS = (("input", "output"), ("source", "target"), ("text", "label"))
# Instruction Words of the paper's datasets and of giellm, stripped from the end of the source.
PAPER_WORDS = (
    "SCNM",
    "TCREE",
    "TCONER",
    "SCPOS:RW",
    "SCPOS:Adj&N",
    "SCPOS:Adj",
    "SCPOS:N",
    "SCPOS",
)
_TRAILER = re.compile(
    r"\s*(?:"
    + "|".join(
        re.escape(w)
        for w in sorted(
            [*PAPER_WORDS, *(t.instruction for t in REGISTRY.values())], key=len, reverse=True
        )
    )
    + r")\s*:?\s*$"
)


def strip_instruction(source: str) -> str:
    """The input text without its trailing Instruction Word."""
    return _TRAILER.sub("", source)


def _swap_reversed(target: str, text: str) -> str:
    """Rewrite `span:type` items as `type:span` when only the first part occurs in the text."""
    close = target.find(">") + 1 if target.lstrip().startswith("<") else 0
    items = []
    for item in split_unescaped(target[close:], ";"):
        parts = split_unescaped(item, ":", 1)
        if (
            len(parts) == 2
            and unescape(parts[1]).strip() not in text
            and unescape(parts[0]).strip() in text
        ):
            item = f"{parts[1]}:{escape(unescape(parts[0]))}"
        items.append(item)
    return target[:close] + ";".join(items)


def _checked(rows: csv.DictReader[str], path: Path) -> Iterator[dict[str, str | None]]:
    """The rows, with the csv module's errors (field too long, bad quoting) named by line."""
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(f"not valid CSV ({err})", path=path, line=rows.line_num) from None
        yield row


def read(path: Path, task: str, notes: Counter[str] | None = None) -> Iterator[Example]:
    task = check_task(task, TASKS, "mre-csv")
    # strict: an unterminated quote is an error, not a field that swallows the rest of the file
    rows = csv.DictReader((raw for _, raw in lines(path)), strict=True)
    try:
        header = rows.fieldnames or []
    except csv.Error as err:
        raise DataError(f"not valid CSV ({err})", path=path, line=1) from None
    names = next((pair for pair in COLUMNS if set(pair) <= set(header)), None)
    if names is None:
        raise DataError(
            f"expected columns input,output (or source,target); found {header}",
            path=path,
            line=1,
        )
    for index, row in enumerate(_checked(rows, path)):
        number = rows.line_num
        source, target = row[names[0]] or "", row[names[1]]
        if target is None:
            raise DataError("the row has no output column", path=path, line=number)
        text = strip_instruction(source)
        if not text.strip():
            raise DataError("text is empty", path=path, line=number, field=names[0])
        base = build(
            {"id": f"{path.stem}-{index:06d}", "task": task, "text": text},
            path=path,
            line=number,
        )
        decoded = decode(_swap_reversed(target, text) if task == "NER" else target, base)
        if decoded.dropped:
            raise DataError(
                f"cannot use {decoded.dropped[0]}", path=path, line=number, field=names[1]
            )
        yield decoded.example
