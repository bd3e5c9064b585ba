"""decode(encode(x)) == x for every record of every shared dataset, split and task."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import shared_cases
from giellm.data.jsonl import dumps, parse_line
from giellm.data.registry import DatasetFormat, dataset_path
from giellm.layout.format import decode, encode


@pytest.mark.parametrize(
    ("fmt", "task", "split"),
    shared_cases(),
    ids=[f"{f.name}-{t}-{s}" for f, t, s in shared_cases()],
)
def test_round_trip_every_record(data_dir: Path, fmt: DatasetFormat, task: str, split: str) -> None:
    path = dataset_path(fmt, split, data_dir)
    schema = fmt.schema(task)
    records = list(fmt.read(path, task))
    assert records, f"{path} gave no records"
    for record in records:
        decoded = decode(encode(record).target, record, schema)
        assert decoded.dropped == (), (record.id, decoded.dropped)
        assert decoded.example == record, record.id
        # the JSONL form round-trips too
        assert parse_line(dumps(record), path="mem", line=1) == record
