"""Multi-task mixing for the Mutual Reinforcement Effect: one shuffled training set from many.

Each pool (a task or a dataset) gets a share of `total` proportional to its weight; a pool smaller
than its share is repeated (each record appears as evenly as possible), a larger one is sampled
without replacement. The same seed always gives the same mix.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from giellm.errors import GiellmError
from giellm.schema import Example


def mix(
    pools: Mapping[str, Sequence[Example]],
    weights: Mapping[str, float] | None = None,
    *,
    total: int | None = None,
    seed: int = 0,
) -> list[Example]:
    """Mix pools by weight (default: equal); `total` defaults to the sum of the pool sizes."""
    weights = dict(weights or {name: 1.0 for name in pools})
    unknown = set(weights) - set(pools)
    if unknown:
        raise GiellmError(f"weights name unknown pools: {', '.join(sorted(unknown))}")
    if any(w < 0 for w in weights.values()) or not any(weights.values()):
        raise GiellmError("weights must be non-negative and not all zero")
    empty = [name for name in weights if weights[name] > 0 and not pools[name]]
    if empty:
        raise GiellmError(f"pools with weight but no records: {', '.join(sorted(empty))}")
    total = sum(len(pools[name]) for name in weights) if total is None else total
    rng = random.Random(seed)
    mass = sum(weights.values())
    names = sorted(weights)
    shares = {name: int(total * weights[name] / mass) for name in names}
    # hand the rounding remainder to the pools with the largest fractional parts
    rest = sorted(names, key=lambda n: total * weights[n] / mass - shares[n], reverse=True)
    for name in rest[: total - sum(shares.values())]:
        shares[name] += 1
    mixed: list[Example] = []
    for name in names:
        pool = list(pools[name])
        repeats, remainder = divmod(shares[name], len(pool)) if pool else (0, 0)
        mixed += pool * repeats + rng.sample(pool, remainder)
    rng.shuffle(mixed)
    return mixed
