"""Predicate-argument structure (PAS): `predicate(case:arg,…)` items, e.g.
`<>行う。(ガ:彼,ヲ:試合)`: the event layout without an event type."""

from __future__ import annotations

from giellm.families.base import register
from giellm.families.events import Events

register(Events("predicates", typed=False))
