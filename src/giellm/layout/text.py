"""The layout's text primitives: escaping separators inside names and spans, splitting on
unescaped separators, and placing span strings at character offsets (the rule the encoder and
the decoder share; see `giellm.layout.format`). Pure functions, no I/O."""

from __future__ import annotations

from giellm.schema import Span

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


def unescaped_positions(value: str, sep: str) -> list[int]:
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
    cuts = unescaped_positions(value, sep)
    if maxsplit >= 0:
        cuts = cuts[:maxsplit]
    parts, last = [], 0
    for cut in cuts:
        parts.append(value[last:cut])
        last = cut + 1
    parts.append(value[last:])
    return parts


def occurrences(text: str, value: str) -> list[int]:
    """Start offsets of every (possibly overlapping) occurrence of `value` in `text`."""
    found, i = [], text.find(value)
    while i >= 0:
        found.append(i)
        i = text.find(value, i + 1)
    return found


class Placer:
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


def entity_placer(text: str) -> Placer:
    """Entities and event triggers: in text order, each occurrence used once."""
    return Placer(text, sequential=True, exclusive=True)
