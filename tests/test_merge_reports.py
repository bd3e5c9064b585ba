"""scripts/merge_reports.py: disjoint reports become one; overlapping ones are refused."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from giellm.errors import GiellmError

SCRIPT = Path(__file__).parent.parent / "scripts" / "merge_reports.py"


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("merge_reports", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(system: str, dataset: str, task: str, f1: float) -> dict[str, object]:
    return {
        "system": system,
        "group": "main",
        "dataset": dataset,
        "task": task,
        "records": 10,
        "text_accuracy": None,
        "word_accuracy": f1,
        "overall_accuracy": f1,
        "precision": f1,
        "recall": f1,
        "f1": f1,
        "seconds": 1.0,
        "records_per_second": 10.0,
    }


def _report(folder: Path, cases: list[str], rows: list[dict[str, object]]) -> Path:
    folder.mkdir()
    data = {"context": {"limit": 10, "cases": cases}, "rows": rows}
    (folder / "report.json").write_text(json.dumps(data), encoding="utf-8")
    return folder


def test_disjoint_reports_merge_into_one(tmp_path: Path) -> None:
    merge = _module()
    a = _report(tmp_path / "a", ["stockmark:NER"], [_row("giellm", "stockmark", "NER", 0.7)])
    b = _report(
        tmp_path / "b",
        ["kwdlc:NER"],
        [_row("giellm", "kwdlc", "NER", 0.6), _row("GiNZA", "kwdlc", "NER", 0.5)],
    )
    rows, context = merge.merged([a, b])
    assert context["cases"] == ["stockmark:NER", "kwdlc:NER"] and len(rows) == 3
    out = merge.write_report(tmp_path / "out", rows, ours="giellm", context=context)
    text = out.read_text(encoding="utf-8")
    assert "| stockmark | NER | giellm |" in text and "kwdlc NER: giellm beats GiNZA" in text


def test_a_case_in_two_reports_is_refused(tmp_path: Path) -> None:
    merge = _module()
    a = _report(tmp_path / "a", ["jrte:SA"], [_row("giellm", "jrte", "SA", 0.8)])
    b = _report(tmp_path / "b", ["jrte:SA"], [_row("giellm", "jrte", "SA", 0.8)])
    with pytest.raises(GiellmError, match="jrte:SA is in an earlier folder"):
        merge.merged([a, b])
