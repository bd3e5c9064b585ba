"""The unified JSONL form of `Example`: validated reading and atomic writing."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from giellm.errors import DataError
from giellm.files import sha256_of, umask
from giellm.schema import Example, example_from_dict, example_to_dict
from giellm.tasks import TASKS


def _open(path: str | Path, mode: str) -> IO[Any]:
    path = Path(path)
    if not path.exists():
        raise DataError("no such file", path=path)
    if path.is_dir():
        raise DataError("is a directory, not a file", path=path)
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is not text, in any format
        return path.open(mode, encoding=None if "b" in mode else "utf-8-sig")
    except OSError as err:
        raise DataError(f"cannot read ({err.strerror})", path=path) from None


def open_text(path: str | Path) -> IO[str]:
    """Open a UTF-8 input file with a clear error when it is missing or unreadable."""
    return _open(path, "r")


def validation_error(
    err: ValidationError, *, path: str | Path, line: int | None = None, record: int | None = None
) -> DataError:
    """Turn pydantic's error into one line naming the file, line (or record) and field."""
    first = err.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"].removeprefix("Value error, ")
    return DataError(message, path=path, line=line, record=record, field=field)


def load_json(path: str | Path) -> Any:
    """Parse a whole-file JSON document with an error that names the file and line."""
    with open_text(path) as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as err:
            raise DataError(f"not valid JSON ({err.msg})", path=path, line=err.lineno) from None
        except UnicodeDecodeError as err:
            raise DataError(f"not UTF-8 text ({err.reason})", path=path) from None


def load_json_array(path: str | Path) -> list[dict[str, Any]]:
    """A whole-file JSON array of objects (stockmark, JacRED)."""
    data = load_json(path)
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise DataError("expected a JSON array of objects", path=path)
    return data


def _json_object(raw: str, *, path: str | Path, line: int) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise DataError(
            f"not valid JSON ({err.msg}, column {err.colno})", path=path, line=line
        ) from None
    except RecursionError:
        raise DataError("JSON nested too deeply", path=path, line=line) from None
    except ValueError as err:  # e.g. an integer of more than 4,300 digits
        raise DataError(f"not usable JSON ({err})", path=path, line=line) from None
    if not isinstance(data, dict):
        raise DataError("expected a JSON object", path=path, line=line)
    return data


def parse_line(raw: str, *, path: str | Path, line: int) -> Example:
    """One JSONL line -> Example; DataError names file, line and field on any problem."""
    data = _json_object(raw, path=path, line=line)
    try:
        example = example_from_dict(data)
    except ValidationError as err:
        raise validation_error(err, path=path, line=line) from None
    if example.task.upper() not in TASKS:
        raise DataError(
            f"unknown task {example.task!r} (known: {', '.join(TASKS)})",
            path=path,
            line=line,
            field="task",
        )
    return example


def lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Numbered lines of a UTF-8 file; bytes that are not UTF-8 give an error naming the line."""
    for number, raw in raw_lines(path):
        yield number, decode_line(raw, number, path)


def raw_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    with _open(path, "rb") as handle:
        yield from enumerate(handle, start=1)


def decode_line(raw: bytes, number: int, path: str | Path) -> str:
    try:  # a UTF-8 byte-order mark (Windows editors write one) is not text
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text ({err.reason})", path=path, line=number) from None


def json_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSON-lines file of any schema."""
    for number, raw in lines(path):
        if raw.strip():
            yield number, _json_object(raw, path=path, line=number)


def _numbered(path: str | Path) -> Iterator[tuple[int, Example]]:
    for number, raw in lines(path):
        if raw.strip():
            yield number, parse_line(raw, path=path, line=number)


def read_jsonl(path: str | Path) -> Iterator[Example]:
    """Read unified records; blank lines are allowed, anything else must be a valid record."""
    return (example for _, example in _numbered(path))


def dumps(example: Example) -> str:
    return json.dumps(example_to_dict(example), ensure_ascii=False)


def writes_through(path: str | Path) -> bool:
    """Is `path` a device, FIFO or pipe (`-o /dev/null`, `-o /dev/stdout`)? Those are written
    as they are: renaming a finished file over one would replace the node (as root, the
    machine's /dev/null) with a regular file."""
    path = Path(path)
    return path.exists() and not path.is_file() and not path.is_dir()


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[str]]:
    """Write to a temporary file beside `path` and rename it into place only on success.

    A failure half-way (bad record, Ctrl-C) leaves no partial output behind.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not str(path) or path.is_dir():
        raise DataError("is a directory, not a file", path=path)
    if not directory.is_dir():
        raise DataError("output directory does not exist", path=directory)
    if writes_through(path):
        with path.open("w", encoding="utf-8") as handle:
            yield handle
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as err:
        raise DataError(f"cannot write here ({err.strerror})", path=path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # as an ordinary open() would have made it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_writable(path: Path) -> None:
    """Fail now, with one line, for an output that could not be written at the end."""
    if not str(path) or path.is_dir():
        raise DataError("is a directory, not a file", path=path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise DataError("output directory does not exist", path=directory)
    try:  # try it for real: permission bits say little to root or on a read-only mount
        if writes_through(path):  # a device or FIFO is written to as it is
            if not os.access(path, os.W_OK):
                raise PermissionError(13, "not writable")
            return
        with tempfile.TemporaryFile(dir=directory):
            pass
        if path.exists():
            with path.open("a"):
                pass
    except OSError as err:
        raise DataError(f"cannot write here ({err.strerror})", path=path) from None


def check_outputs(inputs: Sequence[Path], outputs: Sequence[Path]) -> None:
    """Refuse an output that cannot be written, or that is one of the inputs (or another
    output): it would be overwritten."""

    def same(a: Path, b: Path) -> bool:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()

    for k, out in enumerate(outputs):
        check_writable(out)
        for other in [*inputs, *outputs[:k]]:
            if same(out, other):
                kind = "an input" if other in inputs else "another output"
                raise DataError(f"the output is also {kind}; choose another path", path=out)


def write_jsonl(path: str | Path, examples: Iterable[Example]) -> int:
    """Write records atomically; returns how many were written."""
    count = 0
    with atomic_writer(path) as handle:
        for example in examples:
            handle.write(dumps(example) + "\n")
            count += 1
    return count


def _check_unique(example: Example, seen: dict[str, int], path: str | Path, line: int) -> None:
    if example.id in seen:
        raise DataError(
            f"duplicate id {example.id!r} (first on line {seen[example.id]})",
            path=path,
            line=line,
            field="id",
        )
    seen[example.id] = line


def unique_ids(records: Iterable[Example], path: str | Path) -> Iterator[Example]:
    """`records` as they come, failing at the first repeated id (predict and evaluate pair
    records by id, and would refuse the file later)."""
    seen: dict[str, int] = {}
    for number, example in enumerate(records, start=1):
        if example.id in seen:
            raise DataError(
                f"two records have the id {example.id!r} (records {seen[example.id]} and "
                f"{number}); give them distinct ids in the source",
                path=path,
                record=number,
                field="id",
            )
        seen[example.id] = number
        yield example


def check_unique_ids(records: Sequence[Example], path: str | Path) -> None:
    """Records from any reader must have unique ids: predictions are paired by id."""
    seen: dict[str, int] = {}
    for number, example in enumerate(records, start=1):
        _check_unique(example, seen, path, number)


def read_unique(path: str | Path) -> list[Example]:
    """Read a whole unified file whose ids must be unique (for pairing gold and predictions)."""
    seen: dict[str, int] = {}
    out = []
    for number, example in _numbered(path):
        _check_unique(example, seen, path, number)
        out.append(example)
    return out


@dataclass(frozen=True)
class Reject:
    """A line that could not be used, kept with its reason so nothing is silently lost."""

    line: int
    error: str
    raw: str


def read_or_reject(path: str | Path) -> tuple[list[Example], list[Reject]]:
    """Every valid record of a unified file, and every other non-blank line as a `Reject`
    (not UTF-8, bad JSON, wrong fields, unknown task, duplicate id): for `--on-error skip`."""
    records: list[Example] = []
    rejects: list[Reject] = []
    seen: dict[str, int] = {}
    for number, data in raw_lines(path):
        raw = data.decode("utf-8", errors="backslashreplace")  # as the reject shows it
        if not raw.strip():
            continue
        try:
            example = parse_line(decode_line(data, number, path), path=path, line=number)
            _check_unique(example, seen, path, number)
        except DataError as err:
            rejects.append(Reject(number, str(err), raw.rstrip("\n")))
            continue
        records.append(example)
    return records, rejects


def write_rejects(path: str | Path, rejects: Iterable[Reject]) -> int:
    """Rejected lines as JSONL ({"line", "error", "raw"}), written atomically."""
    count = 0
    with atomic_writer(path) as handle:
        for r in rejects:
            handle.write(json.dumps(vars(r), ensure_ascii=False) + "\n")
            count += 1
    return count


def partial_path(path: str | Path) -> Path:
    """Where an unfinished prediction run keeps what it has written so far."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def check_run_settings(partial: Path, settings: dict[str, Any]) -> None:
    """Keep a run's settings beside its partial file; refuse to resume under other ones.

    A partial made for `--task NER` resumed with `--task SA` (or another model or schema)
    would mix two runs' predictions in one file.
    """
    sidecar = settings_path(partial)
    if partial.exists() and partial.stat().st_size and sidecar.exists():
        before = json.loads(sidecar.read_text(encoding="utf-8"))
        keys = settings.keys() | before.keys()
        changed = sorted(k for k in keys if before.get(k) != settings.get(k))
        if "input_fingerprint" in changed:
            raise DataError(
                "its input file has changed since it was written (size or content); "
                "delete it to predict the new input from the start",
                path=partial,
            )
        if changed:
            name = changed[0]
            raise DataError(
                f"was written with {name}={before.get(name)!r}, not {settings.get(name)!r}; "
                "rerun with the same settings or delete it to start over",
                path=partial,
            )
    sidecar.write_text(json.dumps(settings, ensure_ascii=False, sort_keys=True), encoding="utf-8")


def fingerprint(path: Path) -> str:
    """Size and SHA-256 of a file: a partial run resumes only over the very input it began
    with (same ids with edited texts would otherwise keep the old predictions)."""
    return f"{path.stat().st_size}:{sha256_of(path)}"


def settings_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".settings.json")


def open_locked(path: Path) -> IO[str]:
    """`path` opened for appending under an exclusive lock: two runs never write one file."""
    import fcntl

    try:
        handle = path.open("a", encoding="utf-8")
    except OSError as err:
        raise DataError(f"cannot write here ({err.strerror})", path=path) from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataError(
            "another giellm run is writing it; wait for that run or choose another output",
            path=path,
        ) from None
    return handle


def resume_count(partial: Path, ids: Sequence[str]) -> int:
    """How many of `ids` a killed run already wrote to `partial` (0 if none).

    A torn last line (the kill hit mid-write) is cut off; a file that holds other records than
    the first of `ids` is an error, never silently overwritten or merged.
    """
    if not partial.exists():
        return 0
    done: list[str] = []
    keep = 0
    with partial.open("rb") as handle:
        for raw in handle:
            try:  # a whole, valid record; a torn or partial line ends what was done
                text = raw.decode("utf-8") if raw.endswith(b"\n") else ""
                record = parse_line(text, path=partial, line=len(done) + 1) if text else None
            except (UnicodeDecodeError, DataError):
                record = None
            if record is None:
                break
            done.append(record.id)
            keep += len(raw)
    if done != list(ids[: len(done)]):
        raise DataError(
            "holds predictions of other records than this input's; delete it to start over",
            path=partial,
        )
    with partial.open("r+b") as handle:
        handle.truncate(keep)
    return len(done)
