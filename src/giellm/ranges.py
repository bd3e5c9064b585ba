"""Numeric settings with their allowed ranges, checked before any work starts.

A batch size of -2 looped forever, an overlap as wide as the window crashed after the base had
loaded, `epochs: 0` trained a useless model: each numeric field of a settings dataclass says its
range in its metadata (`least`, `above`, `most`, `below`), and `check_ranges` names the first
field outside it, for a config file as for a model's stored `giellm.json`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from giellm.errors import GiellmError


def bounds(
    least: float | None = None,
    above: float | None = None,
    most: float | None = None,
    below: float | None = None,
) -> dict[str, float]:
    """Field metadata for a numeric range (None: unbounded on that side)."""
    found = {"least": least, "above": above, "most": most, "below": below}
    return {k: v for k, v in found.items() if v is not None}


def _problem(value: Any, meta: Any) -> str | None:
    """Why `value` is outside the range in `meta` (None when it is inside)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if "least" in meta and value < meta["least"]:
        return f"must be at least {meta['least']}"
    if "above" in meta and value <= meta["above"]:
        return f"must be above {meta['above']}"
    if "most" in meta and value > meta["most"]:
        return f"must be at most {meta['most']}"
    if "below" in meta and value >= meta["below"]:
        return f"must be below {meta['below']}"
    return None


def check_ranges(settings: Any, where: str = "") -> None:
    """Raise `GiellmError` naming the first numeric field of a dataclass outside its range
    (floats must also be finite)."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        problem = _problem(value, f.metadata)
        if problem:
            raise GiellmError(f"{where}{f.name}: {value!r} {problem}")


def check_windows(window_chars: int, window_overlap: int) -> None:
    """An overlap as wide as the window would never advance: refused in one line."""
    if window_overlap >= window_chars:
        raise GiellmError(
            f"window_overlap: {window_overlap} must be below window_chars ({window_chars}): "
            "windows would never advance"
        )
