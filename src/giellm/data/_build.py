"""Shared helpers for readers: build a validated Example or fail naming the file and record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from giellm.data.jsonl import validation_error
from giellm.errors import GiellmError
from giellm.schema import Example
from giellm.tasks import get_task


def build(
    fields: dict[str, Any], *, path: Path, line: int | None = None, record: int | None = None
) -> Example:
    """Validate reader output; a bad source record becomes a DataError, never a traceback."""
    try:
        return Example.model_validate(fields)
    except ValidationError as err:
        raise validation_error(err, path=path, line=line, record=record) from None


def check_task(task: str, supported: tuple[str, ...], reader: str) -> str:
    """The canonical task name, or a clear error when this reader cannot fill it."""
    name = get_task(task).name
    if name not in supported:
        raise GiellmError(
            f"format {reader!r} has no {name} annotation; it supports: {', '.join(supported)}"
        )
    return name
