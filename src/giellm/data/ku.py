"""KU corpora in the collection's JSONL (KWDLC, Wikipedia Annotated Corpus, Annotated FKC).

One record per document: the sentences joined by newlines, so that predicate-argument links that
cross sentences (zero anaphora) keep real offsets. Exophoric arguments (著者, 読者, 不特定:人 …)
and the few arguments without a resolved span have no place in the text and are left out; the
reader counts them in `notes` so nothing disappears unreported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from giellm.data._build import build, check_task
from giellm.data.jsonl import json_objects
from giellm.errors import DataError
from giellm.schema import Example

IREX_TYPES = (
    "ARTIFACT",
    "DATE",
    "LOCATION",
    "MONEY",
    "OPTIONAL",
    "ORGANIZATION",
    "PERCENT",
    "PERSON",
    "TIME",
)
FKC_GENRES = ("consumer_electronics", "hospital", "it", "super", "traffic", "trip")
# Case/role labels that occur in the three corpora (≒ marks an approximate relation).
CASES = tuple(
    """
    カラ カラ≒ ガ ガ≒ ガ２ ガ２≒ デ デ≒ ト ト≒ トシテ トシテ≒
    ニ ニ≒ ニアワセテ ニオイテ ニオク ニカギッテ ニカギラズ ニカワッテ
    ニカンシテ ニカンシテ≒ ニカンスル ニクラベテ ニクワエテ ニシテ
    ニソッテ ニタイシテ ニタイシテ≒ ニタイスル ニツイテ ニツイテ≒
    ニツク ニツヅイテ ニトッテ ニトッテ≒ ニトモナッテ ニナランデ
    ニムケテ ニモトヅイテ ニヨッテ ニヨッテ≒ ニヨラズ ニヨル ヘ ヘ≒
    マデ マデニ ヨリ ヲ ヲ≒ ヲツウジテ ヲツウジル ヲノゾイテ
    ヲフクメテ ヲメグッテ ヲメグッテ≒ 判ガ 時間 時間≒
    """.split()
)
SEPARATOR = "\n"


def _document(doc: dict[str, Any], task: str, notes: Counter[str]) -> dict[str, Any]:
    sentences = doc["sentences"]
    offsets, position = {}, 0
    for sentence in sentences:
        offsets[sentence["sid"]] = position
        position += len(sentence["text"]) + len(SEPARATOR)
    text = SEPARATOR.join(s["text"] for s in sentences)
    fields: dict[str, Any] = {
        "id": doc["doc_id"],
        "task": task,
        "text": text,
        "label": doc.get("genre"),
    }
    if task == "NER":
        fields["entities"] = [
            {
                "text": e["name"],
                "type": e["type"],
                "start": offsets[s["sid"]] + e["span"][0],
                "end": offsets[s["sid"]] + e["span"][1],
            }
            for s in sentences
            for e in s["entities"]
        ]
    elif task == "PAS":
        events = []
        for s in sentences:
            base = offsets[s["sid"]]
            for pas in s["pas"]:
                arguments = []
                for arg in pas["args"]:
                    if "tspan" not in arg:
                        notes["exophoric or unresolved argument left out"] += 1
                        continue
                    if arg["sid"] not in offsets:
                        notes["argument in another document left out"] += 1
                        continue
                    start = offsets[arg["sid"]] + arg["tspan"][0]
                    argument = {
                        "text": arg["target"],
                        "role": arg["case"],
                        "start": start,
                        "end": start + len(arg["target"]),
                    }
                    if argument in arguments:  # the same role and span twice says it once
                        notes["repeated argument (same role and span) kept once"] += 1
                        continue
                    arguments.append(argument)
                events.append(
                    {
                        "trigger": {
                            "text": pas["pred"],
                            "start": base + pas["span"][0],
                            "end": base + pas["span"][1],
                        },
                        "arguments": arguments,
                    }
                )
        fields["events"] = events
    return fields


def reader(
    name: str, tasks: tuple[str, ...]
) -> Callable[[Path, str, Counter[str] | None], Iterator[Example]]:
    """A reader for one KU corpus (they share one layout and differ in the tasks they fill)."""

    def read(path: Path, task: str, notes: Counter[str] | None = None) -> Iterator[Example]:
        task = check_task(task, tasks, name)
        notes = Counter() if notes is None else notes
        for number, doc in json_objects(path):
            try:
                fields = _document(doc, task, notes)
            except (KeyError, IndexError, TypeError) as err:
                raise DataError(
                    f"malformed document (missing or bad {err})", path=path, line=number
                ) from None
            yield build(fields, path=path, line=number)

    return read
