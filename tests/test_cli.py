"""The real `giellm` command: convert, evaluate, datasets, and one-line errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from seqeval.metrics import f1_score
from seqeval.scheme import IOB2

from conftest import run_cli, shared_path
from giellm.data.jsonl import read_jsonl, write_jsonl
from giellm.data.registry import get_format
from test_metrics import bio, perturb, without_overlaps


def convert(data_dir: Path, out: Path, name: str = "stockmark", task: str = "NER") -> Path:
    result = run_cli(
        "convert",
        str(shared_path(data_dir, name, "dev")),
        "--from",
        name,
        "--task",
        task,
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    return out


def test_convert_writes_unified_jsonl(data_dir: Path, tmp_path: Path) -> None:
    out = convert(data_dir, tmp_path / "stockmark.jsonl")
    records = list(read_jsonl(out))
    assert len(records) == 534
    assert records == list(
        get_format("stockmark").read(shared_path(data_dir, "stockmark", "dev"), "NER")
    )
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[1])
    assert list(first)[:4] == ["id", "task", "text", "label"]


def test_convert_reports_left_out_arguments(data_dir: Path, tmp_path: Path) -> None:
    result = run_cli(
        "convert",
        str(shared_path(data_dir, "fkc", "dev")),
        "--from",
        "fkc_complaints",
        "--task",
        "pas",
        "-o",
        str(tmp_path / "f.jsonl"),
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 100 PAS records" in result.stderr
    assert "509 × exophoric or unresolved argument left out" in result.stderr


def test_evaluate_gold_vs_gold_is_one(data_dir: Path, tmp_path: Path) -> None:
    gold = convert(data_dir, tmp_path / "fkc.jsonl", "fkc", "NER")
    result = run_cli("evaluate", "--gold", str(gold), "--pred", str(gold), "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for key in ("text_accuracy", "word_accuracy", "overall_accuracy", "precision", "recall", "f1"):
        assert figures[key] == 1.0, key
    assert set(figures["per_type"]) == {
        "entity:ARTIFACT",
        "entity:LOCATION",
        "entity:MONEY",
        "entity:ORGANIZATION",
    }
    table = run_cli("evaluate", "--gold", str(gold), "--pred", str(gold))
    assert "overall acc" in table.stdout and "1.0000" in table.stdout


def test_evaluate_matches_seqeval_on_a_perturbed_copy(data_dir: Path, tmp_path: Path) -> None:
    gold = [without_overlaps(r) for r in read_jsonl(convert(data_dir, tmp_path / "g.jsonl"))]
    pred = [without_overlaps(r) for r in perturb(gold)]
    write_jsonl(tmp_path / "gold.jsonl", gold)
    write_jsonl(tmp_path / "pred.jsonl", pred[::-1])  # pairing is by id, not by order
    result = run_cli(
        "evaluate",
        "--gold",
        str(tmp_path / "gold.jsonl"),
        "--pred",
        str(tmp_path / "pred.jsonl"),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    expected = f1_score([bio(r) for r in gold], [bio(r) for r in pred], mode="strict", scheme=IOB2)
    assert json.loads(result.stdout)["f1"] == pytest.approx(expected)


def test_datasets_lists_readers_tasks_labels_and_counts() -> None:
    result = run_cli("datasets", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["format"]: row for row in json.loads(result.stdout)}
    assert {
        "stockmark",
        "kwdlc",
        "wac",
        "fkc",
        "jacred",
        "livedoor",
        "jrte",
        "jsonl",
        "mre-csv",
    } <= set(rows)
    assert rows["livedoor"]["counts"] == {"train": 5894, "dev": 737}
    assert len(rows["jacred"]["labels"]["RE"]["relation_types"]) == 35
    assert rows["fkc"]["tasks"] == ["TC", "NER", "PAS"]
    assert rows["stockmark"]["license"] == "CC BY-SA 3.0"  # every shared dataset names its terms
    assert all(rows[name]["license"] for name in ("kwdlc", "wac", "fkc", "jacred", "jrte"))
    assert rows["jsonl"]["license"] is None  # a user's own file: their own terms


def bad_jsonl(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "bad.jsonl"
    good = '{"id": "1", "task": "NER", "text": "東京へ行く。", "label": null}'
    path.write_text(good + "\n" + line + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["convert", "missing.json", "--from", "stockmark", "--task", "NER"],
            "missing.json: no such file",
        ),
        (["convert", "{jsonl}", "--from", "nope", "--task", "NER"], "unknown format 'nope'"),
        (
            ["convert", "{latin1}", "--from", "jsonl", "--task", "NER"],
            "latin1.jsonl:2: not UTF-8 text",
        ),
        (["convert", "{jsonl}", "--from", "jsonl", "--task", "XX"], "unknown task 'XX'"),
        (
            ["convert", "{bad:{oops}", "--from", "jsonl", "--task", "NER"],
            "bad.jsonl:2: not valid JSON",
        ),
        (
            [
                "convert",
                '{bad:{"id": "2", "task": "NER", "text": "  "}}',
                "--from",
                "jsonl",
                "--task",
                "NER",
            ],
            "bad.jsonl:2: field 'text': text is empty",
        ),
        (
            [
                "convert",
                '{bad:{"id": "2", "task": "NER", "text": "東京", "entities": '
                '[{"text": "東京", "type": "地名", "start": "x", "end": 2}]}}',
                "--from",
                "jsonl",
                "--task",
                "NER",
            ],
            "bad.jsonl:2: field 'entities.0.start'",
        ),
        (
            [
                "convert",
                '{bad:{"id": "2", "task": "XX", "text": "東京"}}',
                "--from",
                "jsonl",
                "--task",
                "NER",
            ],
            "bad.jsonl:2: field 'task': unknown task 'XX'",
        ),
        (
            [
                "convert",
                '{bad:{"id": "1", "task": "NER", "text": "東京"}}',
                "--from",
                "stockmark",
                "--task",
                "NER",
            ],
            "bad.jsonl:2: not valid JSON (Extra data)",
        ),
        (
            [
                "evaluate",
                "--gold",
                '{bad:{"id": "1", "task": "NER", "text": "東京"}}',
                "--pred",
                "{jsonl}",
            ],
            "bad.jsonl:2: field 'id': duplicate id '1' (first on line 1)",
        ),
    ],
)
def test_bad_input_gives_one_clear_line_and_no_output(
    tmp_path: Path, args: list[str], message: str
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "1", "task": "NER", "text": "東京へ行く。"}\n', encoding="utf-8")
    resolved = []
    for arg in args:
        if arg == "{jsonl}":
            arg = str(good)
        elif arg == "{latin1}":
            arg = str(tmp_path / "latin1.jsonl")
            Path(arg).write_bytes(
                good.read_bytes() + '{"id": "2", "text": "café"}\n'.encode("latin-1")
            )
        elif arg.startswith("{bad:"):
            arg = str(bad_jsonl(tmp_path, arg[5:-1]))
        resolved.append(arg)
    out = tmp_path / "out.jsonl"
    if resolved[0] == "convert":
        resolved += ["-o", str(out)]
    result = run_cli(*resolved, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".out.jsonl.*"))  # no temporary file left behind


def test_data_commands_do_not_load_torch() -> None:
    """convert, evaluate and datasets start fast: the ML stack loads only when a model runs."""
    code = "import sys, giellm.cli; sys.exit(bool({'torch', 'transformers'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_version_quiet_and_verbose(data_dir: Path, tmp_path: Path) -> None:
    from giellm import __version__

    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"giellm {__version__}"
    as_module = subprocess.run(
        [sys.executable, "-m", "giellm", "--version"], capture_output=True, text=True
    )
    assert as_module.stdout == version.stdout

    source = str(shared_path(data_dir, "stockmark", "dev"))
    args = ["convert", source, "--from", "stockmark", "--task", "NER"]
    normal = run_cli(*args, "-o", str(tmp_path / "a.jsonl"))
    quiet = run_cli("--quiet", *args, "-o", str(tmp_path / "b.jsonl"))
    verbose = run_cli("--verbose", *args, "-o", str(tmp_path / "c.jsonl"))
    assert all(r.returncode == 0 for r in (normal, quiet, verbose))
    assert "wrote 534 NER records" in normal.stderr
    assert quiet.stderr == ""  # nothing but warnings and errors
    assert "torch threads" in verbose.stderr and "wrote 534" in verbose.stderr
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    both = run_cli("--quiet", "--verbose", *args, "-o", str(tmp_path / "d.jsonl"))
    assert both.returncode == 2 and "choose one" in both.stderr
