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
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from giellm.schema import Argument, Entity, Event, Example, Relation, Span
from giellm.tasks import LabelSchema, Task, get_task

SPECIAL = frozenset("\\;,()#")


def escape(value: str) -> str:
    """Backslash-escape the layout's separator characters."""
    return "".join("\\" + c if c in SPECIAL else c for c in value)


def unescape(value: str) -> str:
    """Drop escaping backslashes (a lone trailing backslash is kept)."""
    out: list[str] = []
    chars = iter(value)
    for c in chars:
        out.append(next(chars, "\\") if c == "\\" else c)
    return "".join(out)


def _unescaped_positions(value: str, sep: str) -> list[int]:
    positions, i = [], 0
    while i < len(value):
        if value[i] == "\\":
            i += 2
            continue
        if value[i] == sep:
            positions.append(i)
        i += 1
    return positions


def split_unescaped(value: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split on `sep` where it is not escaped."""
    cuts = _unescaped_positions(value, sep)
    if maxsplit >= 0:
        cuts = cuts[:maxsplit]
    parts, last = [], 0
    for cut in cuts:
        parts.append(value[last:cut])
        last = cut + 1
    parts.append(value[last:])
    return parts


def build_prompt(text: str, task: Task | str) -> str:
    """The model input: text, then the Instruction Word that names the task."""
    task = get_task(task) if isinstance(task, str) else task
    return f"{text}\n{task.instruction}:\n"


# --- placing span strings at character offsets -------------------------------------------------


def occurrences(text: str, value: str) -> list[int]:
    """Start offsets of every (possibly overlapping) occurrence of `value` in `text`."""
    found, i = [], text.find(value)
    while i >= 0:
        found.append(i)
        i = text.find(value, i + 1)
    return found


class _Placer:
    """The placement rule for one kind of span; encoder and decoder share it (see module doc)."""

    def __init__(self, text: str, *, sequential: bool, exclusive: bool) -> None:
        self.text = text
        self.sequential = sequential
        self.exclusive = exclusive
        self.cursor = 0
        self.used: set[tuple[int, int]] = set()
        self._cache: dict[str, list[int]] = {}

    def occurrences(self, value: str) -> list[int]:
        if value not in self._cache:
            self._cache[value] = occurrences(self.text, value)
        return self._cache[value]

    def default(self, value: str, anchor: int | None = None) -> int | None:
        occ = self.occurrences(value)
        if not occ:
            return None
        if anchor is not None:
            return min(occ, key=lambda o: (abs(o - anchor), o))
        pool = occ
        if self.exclusive:
            pool = [o for o in occ if (o, o + len(value)) not in self.used] or occ
        if self.sequential:
            return next((o for o in pool if o >= self.cursor), pool[0])
        return pool[0]

    def place(self, value: str, start: int) -> None:
        self.cursor = start
        if self.exclusive:
            self.used.add((start, start + len(value)))

    def write(self, span: Span, anchor: int | None = None) -> str:
        """Encoder side: the escaped span, with `#k` when the rule would misplace it."""
        out = escape(span.text)
        if self.default(span.text, anchor) != span.start:
            out += f"#{self.occurrences(span.text).index(span.start) + 1}"
        self.place(span.text, span.start)
        return out

    def read(self, raw: str, anchor: int | None = None) -> Span | None:
        """Decoder side: parse `span[#k]` and place it; None when it is not in the text."""
        pieces = split_unescaped(raw, "#")
        marker = None
        if len(pieces) > 1 and pieces[-1].isascii() and pieces[-1].isdigit():
            marker, raw = int(pieces[-1]), "#".join(pieces[:-1])
        for value in dict.fromkeys([unescape(raw), unescape(raw).strip()]):
            if not value:
                continue
            occ = self.occurrences(value)
            if marker is not None and 1 <= marker <= len(occ):
                start: int | None = occ[marker - 1]
            else:
                start = self.default(value, anchor)
            if start is not None:
                self.place(value, start)
                return Span(text=value, start=start, end=start + len(value))
        return None


def _entity_placer(text: str) -> _Placer:
    return _Placer(text, sequential=True, exclusive=True)


# --- encode ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    prompt: str
    target: str


def encode_target(example: Example) -> str:
    """The target text of a record for its task (see the module doc for the layouts)."""
    task = get_task(example.task)
    text = example.text
    items: list[str] = []
    if task.family == "entities":
        placer = _entity_placer(text)
        items = [f"{escape(e.type)}:{placer.write(e)}" for e in example.entities]
    elif task.family == "relations":
        heads = _Placer(text, sequential=True, exclusive=False)
        tails = _Placer(text, sequential=False, exclusive=False)
        items = [
            f"{heads.write(r.head)},{escape(r.type)},{tails.write(r.tail)}"
            for r in example.relations
        ]
    elif task.family == "events":
        triggers = _entity_placer(text)
        args = _Placer(text, sequential=False, exclusive=False)
        for ev in example.events:
            head = triggers.write(ev.trigger)
            if task.typed_events:
                head = f"{escape(ev.type or '')}:{head}"
            inner = ",".join(
                f"{escape(a.role)}:{args.write(a, ev.trigger.start)}" for a in ev.arguments
            )
            items.append(f"{head}({inner})")
    return f"<{example.label or ''}>" + ";".join(items)


def encode(example: Example) -> Encoded:
    """Record -> (prompt, target) for training; the prompt alone is what inference feeds."""
    return Encoded(build_prompt(example.text, example.task), encode_target(example))


# --- decode ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """A decoded prediction and what could not be used (one human-readable line per item)."""

    example: Example
    dropped: tuple[str, ...] = ()


def _allowed(value: str, allowed: frozenset[str] | None) -> bool:
    return allowed is None or value in allowed


class _Decoder:
    def __init__(self, source: Example, schema: LabelSchema) -> None:
        self.text = source.text
        self.task = get_task(source.task)
        self.schema = schema
        self.dropped: list[str] = []

    def drop(self, item: str, why: str) -> None:
        self.dropped.append(f"{why}: {item!r}")

    def label(self, generated: str) -> tuple[str | None, str]:
        body = generated.lstrip()  # not rstrip: the last span may end in a space
        if not body.startswith("<"):
            return None, body
        close = body.find(">")
        if close < 0:
            self.drop(body, "unclosed label")
            return None, ""
        label = body[1:close].strip() or None
        if label is not None and not _allowed(label, self.schema.labels):
            self.drop(label, "unknown label")
            label = None
        return label, body[close + 1 :]

    def entities(self, items: list[str]) -> list[Entity]:
        placer, out = _entity_placer(self.text), []
        for item in items:
            parts = split_unescaped(item, ":", 1)
            if len(parts) < 2:
                self.drop(item, "no type")
                continue
            etype = unescape(parts[0]).strip()
            if not etype or not _allowed(etype, self.schema.entity_types):
                self.drop(item, "unknown entity type")
                continue
            span = placer.read(parts[1])
            if span is None:
                self.drop(item, "span not in text")
                continue
            out.append(Entity(type=etype, **span.model_dump()))
        return out

    def relations(self, items: list[str]) -> list[Relation]:
        heads = _Placer(self.text, sequential=True, exclusive=False)
        tails = _Placer(self.text, sequential=False, exclusive=False)
        out = []
        for item in items:
            parts = split_unescaped(item, ",")
            if len(parts) != 3:
                self.drop(item, "not head,relation,tail")
                continue
            rtype = unescape(parts[1]).strip()
            if not rtype or not _allowed(rtype, self.schema.relation_types):
                self.drop(item, "unknown relation type")
                continue
            head, tail = heads.read(parts[0]), tails.read(parts[2])
            if head is None or tail is None:
                self.drop(item, "span not in text")
                continue
            out.append(Relation(head=head, type=rtype, tail=tail))
        return out

    def event(self, item: str, triggers: _Placer, args: _Placer) -> Event | None:
        opens = _unescaped_positions(item, "(")
        head, inner = (item[: opens[0]], item[opens[0] + 1 :]) if opens else (item, "")
        closes = _unescaped_positions(inner, ")")
        if closes:
            inner = inner[: closes[-1]]
        etype = None
        if self.task.typed_events:
            parts = split_unescaped(head, ":", 1)
            if len(parts) < 2 or not unescape(parts[0]).strip():
                self.drop(item, "no event type")
                return None
            etype, head = unescape(parts[0]).strip(), parts[1]
            if not _allowed(etype, self.schema.event_types):
                self.drop(item, "unknown event type")
                return None
        trigger = triggers.read(head)
        if trigger is None:
            self.drop(item, "trigger not in text")
            return None
        arguments = []
        for raw in split_unescaped(inner, ",") if inner.strip() else []:
            parts = split_unescaped(raw, ":", 1)
            role = unescape(parts[0]).strip() if len(parts) == 2 else ""
            if not role or not _allowed(role, self.schema.roles):
                self.drop(raw, "unknown role")
                continue
            span = args.read(parts[1], trigger.start)
            if span is None:
                self.drop(raw, "argument not in text")
                continue
            argument = Argument(role=role, **span.model_dump())
            if argument in arguments:  # small models loop: `ガ:トヨタ` 21 times
                self.drop(raw, "repeated argument")
                continue
            arguments.append(argument)
        return Event(trigger=trigger, type=etype, arguments=tuple(arguments))

    def events(self, items: list[str]) -> list[Event]:
        triggers = _entity_placer(self.text)
        args = _Placer(self.text, sequential=False, exclusive=False)
        found = (self.event(item, triggers, args) for item in items)
        return [ev for ev in found if ev is not None]


def decode(generated: str, source: Example, schema: LabelSchema | None = None) -> Decoded:
    """Generated text + the source record (its id, task, text) -> a predicted record.

    Never raises on any `generated` string: unparseable items, unknown labels or types and spans
    that do not occur in the text are dropped and listed in `Decoded.dropped`.
    """
    decoder = _Decoder(source, schema or LabelSchema())
    label, rest = decoder.label(generated)
    items = [item for item in split_unescaped(rest, ";") if item.strip()]
    family = decoder.task.family
    fields: dict[str, object] = {}
    try:
        if family == "entities":
            fields["entities"] = decoder.entities(items)
        elif family == "relations":
            fields["relations"] = decoder.relations(items)
        elif family == "events":
            fields["events"] = decoder.events(items)
        else:
            for item in items:
                decoder.drop(item, "unexpected item for a label-only task")
        example = Example(id=source.id, task=source.task, text=source.text, label=label, **fields)
    except ValidationError as err:  # defensive: placed spans are valid by construction
        decoder.drop(generated, f"invalid record ({err.error_count()} errors)")
        example = Example(id=source.id, task=source.task, text=source.text, label=label)
    return Decoded(example, tuple(decoder.dropped))
