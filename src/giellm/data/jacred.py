"""JacRED document-level relation extraction (DocRED layout: sents, vertexSet, labels).

The text is the document's tokens joined without spaces (as the source dropped them). NER records
keep every mention with its type; RE records link the first mention (by position) of the head
entity to the first mention of the tail entity, typed with the relation's name.
Token spans in the source are end-exclusive for most mentions and end-inclusive for a few; the
reader takes whichever matches the mention's name and otherwise trusts the token span.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from giellm.data._build import build, check_task
from giellm.data.jsonl import load_json_array
from giellm.errors import DataError
from giellm.schema import Example

TASKS = ("NER", "RE")
ENTITY_TYPES = ("LOC", "ART", "DAT", "PER", "ORG", "%", "TIM", "MON")
# Wikidata property -> relation name, as in JacRED's meta/rel_info.json.
RELATIONS = {
    "P1376": "CapitalOf",
    "P131": "AdministrativeLocation",
    "P276": "Location",
    "P937": "WorkLocation",
    "P27": "CountryOfCitizenship",
    "P569": "DateOfBirth",
    "P570": "DateOfDeath",
    "P19": "PlaceOfBirth",
    "P20": "PlaceOfDeath",
    "P155": "Follows",
    "P40": "Child",
    "P3373": "Sibling",
    "P26": "Spouse",
    "P1344": "ParticipantOf",
    "P463": "MemberOf",
    "P361": "PartOf",
    "P6": "HeadOfGovernment",
    "P710": "Participant",
    "P527": "HasPart",
    "P1830": "OwnerOf",
    "P108": "Employer",
    "P137": "Operator",
    "P69": "EducatedAt",
    "P166": "AwardReceived",
    "P127": "OwnedBy",
    "P112": "FoundedBy",
    "P36": "Capital",
    "P1441": "PresentInWork",
    "P170": "Creator",
    "P123": "Publisher",
    "P400": "Platform",
    "P674": "Characters",
    "P156": "FollowedBy",
    "P175": "Performer",
    "P121": "ItemOperated",
}


def _index(value: Any, name: str) -> int:
    """A list index from the file: Python would silently read -1 from the end."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} = {value!r}, not an index")
    return value


def _mention(
    text: str, starts: list[list[int]], m: dict[str, Any], notes: Counter[str]
) -> dict[str, Any]:
    sid, (first, last) = _index(m["sent_id"], "sent_id"), m["pos"]
    bounds = starts[sid]
    _index(first, "pos"), _index(last, "pos")
    start, end = bounds[first], bounds[last]
    if (
        text[start:end] != m["name"]
        and last + 1 < len(bounds)
        and text[start : bounds[last + 1]] == m["name"]
    ):
        end = bounds[last + 1]
        notes["end-inclusive token span corrected"] += 1
    return {"text": text[start:end], "start": start, "end": end, "type": m["type"]}


def _document(
    doc: dict[str, Any], task: str, record_id: str, notes: Counter[str]
) -> dict[str, Any]:
    starts, position = [], 0
    for sent in doc["sents"]:
        bounds = []
        for token in sent:
            bounds.append(position)
            position += len(token)
        starts.append([*bounds, position])
    text = "".join("".join(sent) for sent in doc["sents"])
    entities = [[_mention(text, starts, m, notes) for m in vertex] for vertex in doc["vertexSet"]]
    fields: dict[str, Any] = {"id": record_id, "task": task, "text": text}
    if task == "NER":
        fields["entities"] = [m for vertex in entities for m in vertex]
    else:
        first = [min(vertex, key=lambda m: (m["start"], m["end"])) for vertex in entities]
        fields["relations"] = [
            {
                "head": {k: first[_index(rel["h"], "h")][k] for k in ("text", "start", "end")},
                "type": RELATIONS.get(rel["r"], rel["r"]),
                "tail": {k: first[_index(rel["t"], "t")][k] for k in ("text", "start", "end")},
            }
            for rel in doc["labels"]
        ]
    return fields


def read(path: Path, task: str, notes: Counter[str] | None = None) -> Iterator[Example]:
    task = check_task(task, TASKS, "jacred")
    notes = Counter() if notes is None else notes
    for index, doc in enumerate(load_json_array(path)):
        try:
            fields = _document(doc, task, f"jacred-{path.stem}-{index:04d}", notes)
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise DataError(
                f"malformed document (missing or bad {err})", path=path, record=index
            ) from None
        yield build(fields, path=path, record=index)
