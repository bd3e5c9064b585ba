"""Constrained decoding: generation can only write targets that `format.decode` fully accepts.

For one task, label schema and input text, `Grammar` is a byte-level automaton of the target
layout (see `giellm.layout.format`): `<label>` from the label set, then items whose types, relations
and roles come from the schema and whose spans are substrings of the input text, ending on a
character boundary, with `\\ ; , ( ) #` escaped and an optional `#k` occurrence marker.
End-of-sequence is allowed only where the target is complete.

Tokens are checked by their bytes (`model.tokenizer.token_bytes`), walking a byte trie of the
vocabulary, so a Japanese character split over several tokens, or a token that crosses a
separator, is handled the same way for every tokenizer. `TokenGuide` keeps one row's automaton
state and picks the best-scoring token that stays inside the layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from giellm.families import get_family
from giellm.layout.text import SPECIAL, escape
from giellm.tasks import LabelSchema, get_task

_SPECIAL_BYTES = frozenset(c.encode()[0] for c in SPECIAL)
_BACKSLASH, _HASH = ord("\\"), ord("#")
_OPEN, _CLOSE = ord("<"), ord(">")
_COLON, _COMMA, _SEMI = ord(":"), ord(","), ord(";")
_LPAREN, _RPAREN, _NEWLINE, _SPACE = ord("("), ord(")"), ord("\n"), ord(" ")
_MAX_MARKER_DIGITS = 3

# A state is a small hashable tuple; the first field names the place in the layout and the last
# is the cursor: the byte offset where the previous entity or event trigger starts (-1 at first).
#   ("open", c)                         before `<`
#   ("lit", kind, prefix, c)            inside a closed-set name (label, type, relation, role)
#   ("after_label", c)                  after `>`
#   ("span", kind, positions, escaped, length, c)
#                                       inside a span: `length` text bytes matched so far, each
#                                       position an offset where the next byte must match (None:
#                                       nothing matched yet)
#   ("marker", kind, digits, c)         inside `#k`
#   ("args", c)                         after an event trigger's `(`
#   ("item_end", c)                     after an event's `)`
State = tuple[Any, ...]

OPEN: State = ("open", -1)
DONE: State = ("done", -1)

# Entities and event triggers are written in text order (true of every shared dataset), so each
# must start after the previous one: this is what stops a small model from repeating an item.
_ORDERED = frozenset({"ent", "trig"})


@dataclass(frozen=True)
class _Literal:
    """A closed set of names (already escaped) or, when `names` is None, any plain name."""

    names: frozenset[bytes] | None
    follow: int  # the byte that ends the name
    allow_empty: bool = False
    prefixes: frozenset[bytes] = field(init=False)

    def __post_init__(self) -> None:
        names = self.names or frozenset()
        prefixes = {name[:i] for name in names for i in range(len(name) + 1)}
        object.__setattr__(self, "prefixes", frozenset(prefixes))

    def complete(self, prefix: bytes) -> bool:
        if not prefix:
            return self.allow_empty
        return self.names is None or prefix in self.names

    def extends(self, prefix: bytes, byte: int) -> bytes | None:
        if self.names is None:
            blocked = byte in _SPECIAL_BYTES or byte in (self.follow, _NEWLINE, _OPEN, _CLOSE)
            return None if blocked else b"x"  # open names: only "non-empty" matters
        longer = prefix + bytes([byte])
        return longer if longer in self.prefixes else None


def _names(values: frozenset[str] | None, *, escaped: bool = True) -> frozenset[bytes] | None:
    if values is None:
        return None
    return frozenset((escape(v) if escaped else v).encode() for v in values)


class Grammar:
    """The target layout of `task` for one input `text`, as a byte automaton."""

    def __init__(self, task: str, schema: LabelSchema, text: str) -> None:
        spec = get_task(task)
        family = get_family(spec.family)
        self.ordered = family.ordered
        self.text = text.encode()
        self.starts = tuple(i for i, b in enumerate(self.text) if b & 0xC0 != 0x80)
        self.starts_by_byte: dict[int, list[int]] = {}
        for i in self.starts:
            self.starts_by_byte.setdefault(self.text[i], []).append(i)
        labels = _names(schema.labels, escaped=False)
        self.literals = {
            # a label-only task (TC, SA) must name a label; elsewhere `<>` means "no label"
            "label": _Literal(labels, _CLOSE, allow_empty=spec.family != "labels"),
            "etype": _Literal(_names(schema.entity_types), _COLON),
            "rtype": _Literal(_names(schema.relation_types), _COMMA),
            "evtype": _Literal(_names(schema.event_types), _COLON),
            "role": _Literal(_names(schema.roles), _COLON),
        }
        self.item_start: tuple[Any, ...] | None = family.grammar_start  # None: label only
        self.item_names = family.grammar_names
        # what ends each kind of span (states without their cursor)
        self.span_ends: dict[str, dict[int, tuple[Any, ...]]] = {
            "ent": {_SEMI: ("next_item",)},  # `;` goes to `_next_item` (see `_span_step`)
            "head": {_COMMA: ("lit", "rtype", b"")},
            "tail": {_SEMI: ("next_item",)},
            "trig": {_LPAREN: ("args",)},
            "arg": {_COMMA: ("lit", "role", b""), _RPAREN: ("item_end",)},
        }
        self.final_spans = frozenset({"ent", "tail"})  # the target may end right after these
        self.after_literal: dict[str, tuple[Any, ...]] = {
            "label": ("after_label",),
            "etype": ("span", "ent", None, False, 0),
            "rtype": ("span", "tail", None, False, 0),
            "evtype": ("span", "trig", None, False, 0),
            "role": ("span", "arg", None, False, 0),
        }

    def names(self) -> set[str] | None:
        """Every name (label, type, relation, role) a target may hold; None if a set is open."""
        out: set[str] = set()
        for kind in ("label", *self.item_names):
            names = self.literals[kind].names
            if names is None:
                return None
            out.update(n.decode() for n in names)
        return out

    # --- the automaton ----------------------------------------------------------------------

    def accepts(self, state: State) -> bool:
        """May the target end (end-of-sequence) in `state`?"""
        place = state[0]
        if place in ("after_label", "item_end"):
            return True
        if place == "span":
            _, kind, positions, escaped, length, _ = state
            return (
                kind in self.final_spans
                and length > 0
                and not escaped
                and bool(self._ends(positions))
            )
        if place == "marker":
            return state[1] in self.final_spans and state[2] > 0
        return False

    def step(self, state: State, byte: int) -> State | None:
        """The state after reading `byte`, or None when the byte would break the layout."""
        place, cursor = state[0], state[-1]
        if place == "open":  # SentencePiece vocabularies may start the target with a space
            if byte == _OPEN:
                return ("lit", "label", b"", cursor)
            return state if byte == _SPACE else None
        if place == "lit":
            _, kind, prefix, _ = state
            literal = self.literals[kind]
            if byte == literal.follow and literal.complete(prefix):
                return (*self.after_literal[kind], cursor)
            longer = literal.extends(prefix, byte)
            return None if longer is None else ("lit", kind, longer, cursor)
        if place == "after_label":
            if self.item_start is None or not self._room_after(cursor):
                return None
            return self.step((*self.item_start, cursor), byte)
        if place == "item_end":
            return self._next_item(cursor) if byte == _SEMI else None
        if place == "args":
            if byte == _RPAREN:
                return ("item_end", cursor)
            return self.step(("lit", "role", b"", cursor), byte)
        if place == "span":
            return self._span_step(state, byte)
        if place == "marker":
            _, kind, digits, _ = state
            if 48 <= byte <= 57 and digits < _MAX_MARKER_DIGITS:
                return ("marker", kind, digits + 1, cursor)
            end = self.span_ends[kind].get(byte) if digits else None
            if end is None:
                return None
            return self._next_item(cursor) if byte == _SEMI else (*end, cursor)
        return None

    def next_bytes(self, state: State) -> set[int] | None:
        """A superset of the bytes `step` may accept in `state` (None: could be any byte).

        Inside a span only the text's own bytes, escapes and terminators can follow, so the
        vocabulary walk need not try the rest.
        """
        if state[0] != "span":
            return None
        _, kind, positions, _, _, cursor = state
        n = len(self.text)
        out = {self.text[p] for p in self._candidates(kind, positions, cursor) if p < n}
        return out | set(self.span_ends[kind]) | {_BACKSLASH, _HASH}

    def _room_after(self, cursor: int) -> bool:
        """Can another item start? (Ordered items need a character after the last one.)"""
        return not self.ordered or (bool(self.starts) and self.starts[-1] > cursor)

    def _next_item(self, cursor: int) -> State | None:
        if self.item_start is None or not self._room_after(cursor):
            return None
        return (*self.item_start, cursor)

    def _ends(self, positions: frozenset[int] | None) -> list[int]:
        """The match ends that fall on a character boundary."""
        n = len(self.text)
        return [p for p in positions or () if p == n or self.text[p] & 0xC0 != 0x80]

    def _candidates(
        self, kind: str, positions: frozenset[int] | None, cursor: int, first: int | None = None
    ) -> Any:
        """Offsets where the next byte may match (`first`: only starts holding that byte)."""
        if positions is not None:
            return positions
        starts = self.starts if first is None else self.starts_by_byte.get(first, ())
        return [p for p in starts if p > cursor] if kind in _ORDERED else starts

    def _span_step(self, state: State, byte: int) -> State | None:
        _, kind, positions, escaped, length, cursor = state
        if not escaped and length:
            ends = self._ends(positions)
            if ends and (byte in self.span_ends[kind] or byte == _HASH):
                if kind in _ORDERED:  # the decoder places it at its first occurrence
                    cursor = min(ends) - length
                if byte == _HASH:
                    return ("marker", kind, 0, cursor)
                if byte == _SEMI:
                    return self._next_item(cursor)
                return (*self.span_ends[kind][byte], cursor)
        literal = escaped or byte not in _SPECIAL_BYTES
        candidates = self._candidates(kind, positions, cursor, byte if literal else None)
        n = len(self.text)
        if escaped:
            if byte not in _SPECIAL_BYTES:
                return None
        elif byte == _BACKSLASH:
            if any(p < n and self.text[p] in _SPECIAL_BYTES for p in candidates):
                return ("span", kind, positions, True, length, cursor)
            return None
        elif byte in _SPECIAL_BYTES:
            return None
        matched = frozenset(p + 1 for p in candidates if p < n and self.text[p] == byte)
        return ("span", kind, matched, False, length + 1, cursor) if matched else None


class VocabIndex:
    """The tokenizer's vocabulary as a byte matrix, walked for all tokens at once.

    A state's allowed tokens are found depth by depth: the tokens still alive are grouped by
    (their automaton state, their next byte), each distinct pair is stepped once in Python, and
    the result is mapped back with numpy. With Gemma's 262k tokens an open label set (every
    token allowed) takes tens of milliseconds, where a dict-of-dicts trie took seconds to build
    and seconds per walk.
    """

    def __init__(self, pieces: Sequence[bytes | None], eos_id: int) -> None:
        import numpy as np

        self.eos_id = eos_id
        self.pieces = list(pieces)
        self.size = len(pieces)
        self.ids = np.array([i for i, p in enumerate(pieces) if p], dtype=np.int64)
        self.lengths = np.array([len(pieces[i] or b"") for i in self.ids], dtype=np.int64)
        width = int(self.lengths.max()) if len(self.ids) else 0
        self.bytes = np.zeros((len(self.ids), width), dtype=np.uint8)
        for row, token_id in enumerate(self.ids):
            piece = pieces[token_id] or b""
            self.bytes[row, : len(piece)] = np.frombuffer(piece, dtype=np.uint8)

    def _walk(self, grammar: Grammar, state: State) -> tuple[Any, Any, list[State]]:
        """(token ids, their state indices, the states) of every token `state` allows."""
        import numpy as np

        states: list[State] = [state]
        number: dict[State, int] = {state: 0}
        rows = np.arange(len(self.ids))
        current = np.zeros(len(rows), dtype=np.int64)
        done_rows, done_states = [], []
        for depth in range(self.bytes.shape[1]):
            if not len(rows):
                break
            keys = current * 256 + self.bytes[rows, depth].astype(np.int64)
            unique, inverse = np.unique(keys, return_inverse=True)
            table = np.empty(len(unique), dtype=np.int64)
            for k, key in enumerate(unique.tolist()):
                nxt = grammar.step(states[key >> 8], key & 0xFF)
                if nxt is None:
                    table[k] = -1
                    continue
                if nxt not in number:
                    number[nxt] = len(states)
                    states.append(nxt)
                table[k] = number[nxt]
            current = table[inverse]
            live = current >= 0
            rows, current = rows[live], current[live]
            ends = self.lengths[rows] == depth + 1
            done_rows.append(rows[ends])
            done_states.append(current[ends])
            rows, current = rows[~ends], current[~ends]
        if not done_rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), states
        return self.ids[np.concatenate(done_rows)], np.concatenate(done_states), states

    def allowed_ids(self, grammar: Grammar, state: State) -> Any:
        """Every token id (ascending, EOS included where the target may end) `state` allows."""
        import numpy as np

        ids, _, _ = self._walk(grammar, state)
        if grammar.accepts(state):
            ids = np.append(ids, self.eos_id)
        return np.sort(ids)

    def allowed(self, grammar: Grammar, state: State) -> dict[int, State]:
        """Every token that keeps `state` in the layout, with the state it leads to."""
        ids, numbers, states = self._walk(grammar, state)
        out = {int(t): states[n] for t, n in zip(ids.tolist(), numbers.tolist(), strict=True)}
        if grammar.accepts(state):
            out[self.eos_id] = DONE
        return out


class TokenGuide:
    """One generated row's place in its grammar, checked token by token.

    Greedy decoding only needs the best-scoring token the grammar allows, so `choose` tries the
    model's top candidates one by one (a handful of byte steps each) and walks the whole
    vocabulary only when none of them fits. The result is the argmax of a fully masked row.
    """

    def __init__(self, trie: VocabIndex, grammar: Grammar) -> None:
        self.trie = trie
        self.grammar = grammar
        self.state: State | None = OPEN
        self._next: dict[tuple[State, int], State | None] = {}
        self._allowed: dict[State, Any] = {}

    @property
    def finished(self) -> bool:
        """Done, or (it cannot happen with a byte-complete vocabulary) stuck: the row ends."""
        return self.state is None or self.state == DONE

    def after(self, token: int) -> State | None:
        """The state after `token`, or None when the grammar forbids it here."""
        state = self.state
        if state is None:
            return None
        key = (state, token)
        if key not in self._next:
            self._next[key] = self._step_token(state, token)
        return self._next[key]

    def _step_token(self, state: State, token: int) -> State | None:
        if token == self.trie.eos_id:
            return DONE if self.grammar.accepts(state) else None
        piece = self.trie.pieces[token] if token < len(self.trie.pieces) else None
        current: State | None = state
        for byte in piece or b"":
            current = self.grammar.step(current, byte)  # type: ignore[arg-type]
            if current is None:
                return None
        return current if piece else None

    def choose(self, ranked: Sequence[int], scores: Any) -> int:
        """The first allowed token of `ranked`, else the best-scoring allowed one; advances."""
        if self.finished:
            return self.trie.eos_id
        token = next((t for t in ranked if self.after(t) is not None), None)
        if token is None:
            allowed = self.allowed_ids(len(scores))
            if not len(allowed):
                self.state = None
                return self.trie.eos_id
            token = int(allowed[int(scores[allowed].argmax())])
        self.state = self.after(token)
        return token

    def allowed_ids(self, vocab: int) -> Any:
        """Every token id (below `vocab`, ascending) the grammar allows in the current state."""
        state = self.state
        if state is None:
            return []
        if state not in self._allowed:
            allowed = self.trie.allowed_ids(self.grammar, state)
            self._allowed[state] = allowed[allowed < vocab]
        return self._allowed[state]
