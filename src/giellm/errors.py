"""User-facing errors: the CLI prints them as one line, never as a traceback."""

from __future__ import annotations

from pathlib import Path


class GiellmError(Exception):
    """A mistake in the user's input or request (bad file, unknown task ...)."""


class DataError(GiellmError):
    """Bad input data; the message names the file, the line (or record) and the field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        record: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.record = record
        self.field = field
        self.reason = message
        where = self.path or "<input>"
        if line is not None:
            where += f":{line}"
        if record is not None:
            where += f": record {record}"
        if field:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")
