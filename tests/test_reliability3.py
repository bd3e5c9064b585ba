"""Round three of the hostile-user findings: each test failed before its fix."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from conftest import run_cli
from giellm.data.jsonl import write_jsonl
from giellm.data.registry import load
from giellm.errors import GiellmError
from giellm.models.loading import TINY_MODEL_DIR, ModelMeta
from giellm.tasks import LabelSchema


def test_predict_writes_through_a_device_and_a_fifo(data_dir: Path, tmp_path: Path) -> None:
    """`predict -o /dev/null` renamed OUT.partial over /dev/null (as root: the machine's)."""
    source = tmp_path / "in.jsonl"
    write_jsonl(source, load("stockmark", "dev", "NER", data_dir)[:4])
    result = run_cli("predict", str(source), "-o", "/dev/null", "--model", "tiny")
    assert result.returncode == 0, result.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not Path("/dev/null.partial").exists()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = run_cli("predict", str(source), "-o", str(fifo), "--model", "tiny")
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    lines = got[0].decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [
        json.loads(line)["id"] for line in source.read_text().splitlines()
    ]
    assert not (tmp_path / "pipe.partial").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "giellm.json: Expecting property name"),
        ("[1, 2]", "giellm.json: expected a JSON object, got list"),
        ('{"window": 3}', "giellm.json: unknown key 'window'"),
        ('{"schemas": {"TC": {"labels": 5}}}', "giellm.json: labels: expected a list of strings"),
        ('{"schemas": {"TC": {"colours": []}}}', "giellm.json: schemas: "),
        ('{"window_chars": 0}', "giellm.json: window_chars: 0 must be at least 1"),
        ('{"max_new_tokens": "many"}', "giellm.json: max_new_tokens: expected a whole number"),
        ('{"window_chars": 40, "window_overlap": 40}', "window_overlap: 40 must be below"),
    ],
)
def test_a_damaged_giellm_json_is_one_line_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    model = tmp_path / "model"
    shutil.copytree(TINY_MODEL_DIR, model)
    (model / "giellm.json").write_text(text, encoding="utf-8")
    with pytest.raises(GiellmError, match=r"giellm\.json: ") as err:
        ModelMeta.load(model)
    assert message in str(err.value)
    result = run_cli("extract", "東京に行った。", "--task", "NER", "--model", str(model))
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": "abc"}, "labels: expected a list of strings, got 'abc'"),
        ({"entity_types": 5}, "entity_types: expected a list of strings, got 5"),
        ({"roles": ["ガ", 3]}, "roles: expected a list of strings, found 3"),
    ],
)
def test_label_sets_are_lists_of_strings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(GiellmError, match=message):
        LabelSchema.of(**kwargs)  # type: ignore[arg-type]
    assert LabelSchema.of(labels=["a", "b"]).labels == frozenset({"a", "b"})
