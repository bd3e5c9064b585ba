"""The tokens a constrained batch can emit, so the output projection skips the rest.

Under the layout grammar a target holds only the layout's characters, the schema's names and
characters of the input text. A token can therefore be emitted only if every complete
character it spells is one of those (its partial UTF-8 bytes, as in byte-fallback pieces, can
be anything). That set is a superset of every state's allowed tokens, so the greedy choice is
unchanged while the output projection (with Gemma: 262,144 rows, half of each step's
arithmetic on a CPU) shrinks to a few percent of the vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

LAYOUT_CHARS = frozenset("<>;:,()#\\0123456789 \n")


class CharIndex:
    """Each token's complete characters, as flat arrays, built once per tokenizer."""

    def __init__(self, pieces: Sequence[bytes | None]) -> None:
        import numpy as np

        codes: list[int] = []
        bounds = [0]
        self.emittable = np.array([p is not None and len(p) > 0 for p in pieces], dtype=bool)
        for piece in pieces:
            codes += map(ord, (piece or b"").decode("utf-8", errors="ignore"))
            bounds.append(len(codes))
        self.codes = np.array(codes, dtype=np.int64)
        self.bounds = np.array(bounds, dtype=np.int64)
        self.size = len(pieces)

    def within(self, chars: Iterable[str], always: Iterable[int] = ()) -> Any:
        """Ids (ascending) of the tokens spelled only with `chars`, plus the ids in `always`."""
        import numpy as np

        known = np.zeros(max(0x110000, int(self.codes.max(initial=0)) + 1), dtype=bool)
        known[[ord(c) for c in set(chars)]] = True
        outside = np.concatenate([[0], np.cumsum(~known[self.codes])])
        clean = outside[self.bounds[1:]] == outside[self.bounds[:-1]]
        ids = np.nonzero(clean & self.emittable)[0]
        extra = np.array([i for i in always if 0 <= i < self.size], dtype=np.int64)
        return np.union1d(ids, extra)


def target_chars(texts: Iterable[str], names: Iterable[str]) -> set[str]:
    """Every character a target of these texts and schema names can contain."""
    chars = set(LAYOUT_CHARS)
    for part in (*texts, *names):
        chars.update(part)
    return chars
