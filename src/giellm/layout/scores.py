"""Scores of generated pieces: the geometric mean of the probabilities of their tokens.

A generated target is cut the way `giellm.layout.format.decode` reads it (the `<label>`, items
separated by `;`, an event's `role:arg` pieces inside its parentheses); each piece's score is
`exp(mean log p)` over the generated tokens that overlap its characters, with `p` the model's
probability of the token it chose at that step (under the constrained decoder: normalised over
the tokens the layout grammar can emit). Pure functions: the decoder looks scores up by piece.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from giellm.errors import GiellmError
from giellm.layout.text import unescaped_positions
from giellm.schema import Argument, Entity, Event, Example, Relation

Scorer = Callable[[int, int], "float | None"]  # [start, end) of the generated text -> score


def token_spans(pieces: Sequence[bytes]) -> list[tuple[int, int]] | None:
    """[start, end) in characters of the decoded text for each token's bytes; a token with
    part of a character covers that character. A character cut short at the end (the output
    hit its budget) covers nothing; None when the bytes are not UTF-8 elsewhere."""
    raw = b"".join(pieces)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.reason != "unexpected end of data":
            return None
        text = raw[: err.start].decode("utf-8")
    char_at: list[int] = []  # byte offset -> index of the character it belongs to
    for index, char in enumerate(text):
        char_at += [index] * len(char.encode("utf-8"))
    spans, offset = [], 0
    for piece in pieces:
        last = offset + len(piece) - 1
        if not piece or offset >= len(char_at):  # empty, or inside the cut-off tail
            start = char_at[offset] if offset < len(char_at) else len(text)
            spans.append((start, start))
        else:
            spans.append((char_at[offset], char_at[min(last, len(char_at) - 1)] + 1))
        offset += len(piece)
    return spans


def scorer(spans: Sequence[tuple[int, int]], logprobs: Sequence[float]) -> Scorer:
    """score(start, end): the geometric mean probability of the tokens overlapping it."""

    def score(start: int, end: int) -> float | None:
        chosen = [lp for (s, e), lp in zip(spans, logprobs, strict=True) if s < end and start < e]
        if not chosen:
            return None
        # 4 decimals: what a confidence can say; more digits would only show float rounding
        return round(min(1.0, math.exp(sum(chosen) / len(chosen))), 4)

    return score


def piece_ranges(generated: str) -> tuple[tuple[int, int] | None, list[tuple[str, int, int]]]:
    """(the label's range, every item and event-argument piece with its range) of a target."""
    body = generated.lstrip()
    at = len(generated) - len(body)
    label = None
    if body.startswith("<"):
        close = body.find(">")
        if close < 0:
            return None, []
        if close > 1:
            label = (at + 1, at + close)
        at += close + 1
    rest = generated[at:]
    pieces: list[tuple[str, int, int]] = []
    starts = [0] + [cut + 1 for cut in unescaped_positions(rest, ";")]
    ends = [*(cut for cut in unescaped_positions(rest, ";")), len(rest)]
    for begin, end in zip(starts, ends, strict=True):
        item = rest[begin:end]
        pieces.append((item, at + begin, at + end))
        opens = unescaped_positions(item, "(")
        if opens:  # an event: its arguments are scored one by one
            inner_at = begin + opens[0] + 1
            inner = rest[inner_at:end]
            closes = unescaped_positions(inner, ")")
            inner = inner[: closes[-1]] if closes else inner
            arg_starts = [0] + [cut + 1 for cut in unescaped_positions(inner, ",")]
            arg_ends = [*unescaped_positions(inner, ","), len(inner)]
            for a, b in zip(arg_starts, arg_ends, strict=True):
                pieces.append((inner[a:b], at + inner_at + a, at + inner_at + b))
    return label, pieces


def at_least(example: Example, threshold: float) -> Example:
    """The record without the items (entities, relations, events, event arguments) scored
    below `threshold`; unscored items and the text-level label stay."""

    def keep(item: Entity | Relation | Event | Argument) -> bool:
        return item.score is None or item.score >= threshold

    events = tuple(
        ev.model_copy(update={"arguments": tuple(a for a in ev.arguments if keep(a))})
        for ev in example.events
        if keep(ev)
    )
    return example.model_copy(
        update={
            "entities": tuple(e for e in example.entities if keep(e)),
            "relations": tuple(r for r in example.relations if keep(r)),
            "events": events,
        }
    )


def check_threshold(threshold: float | None) -> float | None:
    """A threshold is a probability: a clear error outside [0, 1]."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise GiellmError(f"threshold must be within [0, 1], got {threshold}")
    return threshold
