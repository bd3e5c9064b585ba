"""The Format Converter: records to plain-text (prompt, target) pairs and generated text back.

Prompt: the input text, a newline, the task's Instruction Word and a colon, a newline.
Target: `<label>` (empty `<>` when the text has no label) followed by the word-level items,
separated by `;`, in one layout per task family:

    entities   type:span                      <社会>人名:山田太郎;法人名:日立製作所
    relations  head,relation,tail             <>ソニー,Subsidiary,ソニー銀行
    events     type:trigger(role:arg,…)       (EE)  <>買収:買収した(買収者:A社,対象:B社)
               trigger(case:arg,…)            (PAS) <>行う。(ガ:彼,ヲ:試合)

Inside spans and names the characters `\\ ; , ( ) #` are escaped with a backslash. A span that
occurs several times in the text is placed by a fixed rule (below); only when that rule would pick
the wrong occurrence does the span carry a marker `#k` (its k-th occurrence, 1-based), so targets
stay clean and `decode(encode(x)) == x` holds exactly.

Placement rule (the decoder's default, mirrored by the encoder):
- entities and event triggers: the first unused occurrence at or after the previous item's start,
  else the first unused one, else the first one;
- relation heads: the first occurrence at or after the previous head; tails: the first occurrence;
- event arguments: the occurrence nearest to their trigger.

The decoder never raises: whatever it cannot use is left out and reported in `Decoded.dropped`.
Each family's items are encoded and decoded by its unit in `giellm.families`; the escaping and
placement primitives are in `giellm.layout.text`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from giellm.families import Reading, family_of
from giellm.families.base import allowed
from giellm.layout.scores import Scorer, piece_ranges
from giellm.layout.text import split_unescaped
from giellm.schema import Example
from giellm.tasks import LabelSchema, Task, get_task


def build_prompt(text: str, task: Task | str) -> str:
    """The model input: text, then the Instruction Word that names the task."""
    task = get_task(task) if isinstance(task, str) else task
    return f"{text}\n{task.instruction}:\n"


@dataclass(frozen=True)
class Encoded:
    prompt: str
    target: str


def encode_target(example: Example) -> str:
    """The target text of a record for its task (see the module doc for the layouts)."""
    items = family_of(example.task).encode(example)
    return f"<{example.label or ''}>" + ";".join(items)


def encode(example: Example) -> Encoded:
    """Record -> (prompt, target) for training; the prompt alone is what inference feeds."""
    return Encoded(build_prompt(example.text, example.task), encode_target(example))


@dataclass(frozen=True)
class Decoded:
    """A decoded prediction and what could not be used (one human-readable line per item)."""

    example: Example
    dropped: tuple[str, ...] = ()


def _label(generated: str, reading: Reading) -> tuple[str | None, str]:
    """The `<label>` and the rest of the target."""
    body = generated.lstrip()  # not rstrip: the last span may end in a space
    if not body.startswith("<"):
        return None, body
    close = body.find(">")
    if close < 0:
        reading.drop(body, "unclosed label")
        return None, ""
    label = body[1:close].strip() or None
    if label is not None and not allowed(label, reading.schema.labels):
        reading.drop(label, "unknown label")
        label = None
    return label, body[close + 1 :]


def decode(
    generated: str,
    source: Example,
    schema: LabelSchema | None = None,
    score: Scorer | None = None,
) -> Decoded:
    """Generated text + the source record (its id, task, text) -> a predicted record.

    Never raises on any `generated` string: unparseable items, unknown labels or types and spans
    that do not occur in the text are dropped and listed in `Decoded.dropped`. With `score`
    (see `giellm.layout.scores`) the label and every item carry their score.
    """
    reading = Reading(source.text, schema or LabelSchema())
    label_score = None
    if score is not None:
        label_range, pieces = piece_ranges(generated)
        for piece, start, end in pieces:
            if (value := score(start, end)) is not None:
                reading.scores.setdefault(piece, []).append(value)
        label_score = score(*label_range) if label_range else None
    label, rest = _label(generated, reading)
    if label is None:
        label_score = None
    items = [item for item in split_unescaped(rest, ";") if item.strip()]
    try:
        fields = family_of(source.task).decode(items, reading)
        example = Example(
            id=source.id,
            task=source.task,
            text=source.text,
            label=label,
            label_score=label_score,
            **fields,
        )
    except ValidationError as err:  # defensive: placed spans are valid by construction
        reading.drop(generated, f"invalid record ({err.error_count()} errors)")
        example = Example(
            id=source.id, task=source.task, text=source.text, label=label, label_score=label_score
        )
    return Decoded(example, tuple(reading.dropped))
