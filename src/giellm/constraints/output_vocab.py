"""The tokens a constrained batch can emit, so the output projection skips the rest.

Under the layout grammar a target is made of layout characters, the schema's names, and
substrings of the input text (escaped, with `#k` markers). So a token can be emitted only if
every complete character it spells occurs in those, and every two neighbouring characters
that are not layout characters also stand side by side in a text or a name (a Latin subword
such as `tion` needs `ti`, `io`, `on` in the batch's texts). Partial UTF-8 bytes at a token's
edges, as in byte-fallback pieces, are left out of both checks. The result is a superset of
every state's allowed tokens, so the greedy choice is unchanged, while the output projection
(with Gemma: 262,144 rows, about half of each step's arithmetic on a CPU) shrinks to the few
thousand tokens the batch can use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

SEPARATORS = frozenset("<>;:,()#\\\n")
LAYOUT_CHARS = SEPARATORS | frozenset("0123456789 ")
_ALWAYS_PAIRS = [(a, b) for a in "0123456789" for b in "0123456789"] + [(" ", " ")]


def _pair(a: str, b: str) -> int:
    return (ord(a) << 21) | ord(b)


def _pairs(text: str) -> list[int]:
    """Neighbouring characters of `text`, neither a layout separator, as integer keys."""
    return [_pair(a, b) for a, b in pairwise(text) if a not in SEPARATORS and b not in SEPARATORS]


class CharIndex:
    """Each token's complete characters, as flat arrays, built once per tokenizer."""

    def __init__(self, pieces: Sequence[bytes | None]) -> None:
        import numpy as np

        codes: list[int] = []
        pairs: list[int] = []
        bounds, pair_bounds = [0], [0]
        self.emittable = np.array([p is not None and len(p) > 0 for p in pieces], dtype=bool)
        for piece in pieces:
            text = (piece or b"").decode("utf-8", errors="ignore")
            codes += map(ord, text)
            pairs += _pairs(text)
            bounds.append(len(codes))
            pair_bounds.append(len(pairs))
        self.codes = np.array(codes, dtype=np.int64)
        self.bounds = np.array(bounds, dtype=np.int64)
        self.pairs = np.array(pairs, dtype=np.int64)
        self.pair_bounds = np.array(pair_bounds, dtype=np.int64)
        self.size = len(pieces)

    def within(self, texts: Iterable[str], always: Iterable[int] = ()) -> Any:
        """Ids (ascending) of the tokens a target made of `texts` (the input texts and the
        schema's names) can hold, plus the ids in `always`."""
        import numpy as np

        texts = list(texts)
        chars = set(LAYOUT_CHARS).union(*texts)
        known = np.zeros(max(0x110000, int(self.codes.max(initial=0)) + 1), dtype=bool)
        known[[ord(c) for c in chars]] = True
        pairs = {_pair(a, b) for a, b in _ALWAYS_PAIRS}.union(*map(_pairs, texts))
        paired = np.isin(self.pairs, np.fromiter(pairs, dtype=np.int64))
        clean = _all(known[self.codes], self.bounds) & _all(paired, self.pair_bounds)
        ids = np.nonzero(clean & self.emittable)[0]
        extra = np.array([i for i in always if 0 <= i < self.size], dtype=np.int64)
        return np.union1d(ids, extra)

    def masks(
        self, ids: Any, rows: Sequence[Iterable[str]], always: Iterable[int] = ()
    ) -> list[Any]:
        """For each row's texts, which of `ids` (a `within` result for all rows together) that
        row alone allows: `within(row)` as a mask over `ids`. The item scores are normalised
        over it, so a row's scores do not depend on what else shares its batch."""
        import numpy as np

        ids = np.asarray(ids, dtype=np.int64)
        codes, code_bounds = _gather(self.codes, self.bounds, ids)
        pairs, pair_bounds = _gather(self.pairs, self.pair_bounds, ids)
        kept = np.isin(ids, np.fromiter(always, dtype=np.int64))
        out = []
        for texts in rows:
            texts = list(texts)
            chars = set(LAYOUT_CHARS).union(*texts)
            known = np.isin(codes, np.fromiter(map(ord, chars), dtype=np.int64))
            allowed = {_pair(a, b) for a, b in _ALWAYS_PAIRS}.union(*map(_pairs, texts))
            paired = np.isin(pairs, np.fromiter(allowed, dtype=np.int64))
            out.append((_all(known, code_bounds) & _all(paired, pair_bounds)) | kept)
        return out


def _gather(values: Any, bounds: Any, ids: Any) -> tuple[Any, Any]:
    """The entries of tokens `ids` (flat, between `bounds`) and their new bounds."""
    import numpy as np

    starts, lengths = bounds[ids], bounds[ids + 1] - bounds[ids]
    new_bounds = np.concatenate([[0], np.cumsum(lengths)])
    where = np.repeat(starts - new_bounds[:-1], lengths) + np.arange(new_bounds[-1])
    return values[where], new_bounds


def _all(ok: Any, bounds: Any) -> Any:
    """Per token: are all its entries (between consecutive `bounds`) true?"""
    import numpy as np

    bad = np.concatenate([[0], np.cumsum(~ok)])
    return bad[bounds[1:]] == bad[bounds[:-1]]
