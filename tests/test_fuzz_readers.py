"""Fuzzing the readers with mutated real files: whatever the bytes, a reader yields valid
records or raises a GiellmError that names the file — never another exception."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from giellm.data.registry import FORMATS, dataset_path
from giellm.errors import GiellmError
from giellm.schema import Example

SHARED = [name for name, fmt in FORMATS.items() if fmt.folder]
SPECIALS = '{}[]",:\\\t\n ' + "0-9eE.+nulltrue" + "あ東ＡｱðŸ"


def _seed(name: str, data_dir: Path) -> tuple[str, str]:
    """A few real records of the dev split in the file's own form, and the file suffix."""
    path = dataset_path(FORMATS[name], "dev", data_dir)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.dumps(json.loads(text)[:3], ensure_ascii=False, indent=1), ".json"
    return "".join(text.splitlines(keepends=True)[:4]), path.suffix


edits = st.lists(
    st.tuples(
        st.floats(0, 1),
        st.integers(0, 6),  # characters removed
        st.text(alphabet=st.sampled_from(list(SPECIALS)) | st.characters(), max_size=6),
    ),
    min_size=1,
    max_size=4,
)


@pytest.mark.parametrize("name", SHARED)
@given(changes=edits, raw=st.booleans(), cut=st.booleans())
@settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
def test_mutated_real_files_give_records_or_one_clear_error(
    name: str,
    changes: list[tuple[float, int, str]],
    raw: bool,
    cut: bool,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    text, suffix = _seed(name, data_dir)
    for where, drop, insert in changes:
        at = int(where * len(text))
        text = text[:at] + insert + text[at + drop :]
    data = text.encode("utf-8", errors="replace")
    if raw:  # bytes that are not UTF-8
        data = data[: len(data) // 2] + b"\xff\xfe\x80" + data[len(data) // 2 :]
    if cut:
        data = data[: len(data) * 2 // 3]
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    for task in FORMATS[name].tasks:
        try:
            records = list(FORMATS[name].read(path, task))
        except GiellmError as err:
            assert str(path) in str(err)
            event("clear error")
            continue
        assert all(isinstance(r, Example) for r in records)
        event(f"{min(len(records), 3)}+ records read")
