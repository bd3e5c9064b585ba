"""The data commands of `giellm` (convert, evaluate, datasets): argument parsing, then one
library call each."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from giellm.errors import GiellmError
from giellm.progress import logger, record_progress

out_console = Console()


def convert(
    input: Annotated[Path, typer.Argument(help="dataset file to read")],
    from_format: Annotated[
        str, typer.Option("--from", help="source format (see `giellm datasets`)")
    ],
    task: Annotated[str, typer.Option("--task", help="task to convert for: TC SA NER RE EE PAS")],
    output: Annotated[Path, typer.Option("--output", "-o", help="unified JSONL file to write")],
) -> None:
    """Convert a dataset file into giellm's unified JSONL records."""
    from giellm.data.jsonl import check_outputs, unique_ids, write_jsonl
    from giellm.data.registry import get_format

    check_outputs([input], [output])
    fmt = get_format(from_format)
    notes: Counter[str] = Counter()
    started = time.perf_counter()
    with record_progress() as bar:
        records = bar.track(fmt.read(input, task, notes), description=f"converting {input.name}")
        count = write_jsonl(output, unique_ids(records, input))
    seconds = time.perf_counter() - started
    logger.info(f"wrote {count} {task.upper()} records to {output} in {seconds:.2f} s")
    for note, n in sorted(notes.items()):
        logger.info(f"  note: {n} × {note}")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def evaluate(
    gold: Annotated[Path, typer.Option(help="gold records (unified JSONL)")],
    pred: Annotated[Path, typer.Option(help="predicted records, same ids (unified JSONL)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """Score predictions against gold: text/word/overall accuracy and span P/R/F1."""
    from giellm.data.jsonl import read_unique
    from giellm.evaluation.metrics import pair_by_id, score

    golds, preds, missing, unmatched = pair_by_id(read_unique(gold), read_unique(pred))
    if not golds:
        raise GiellmError(f"{gold}: no records to evaluate")
    report = score(golds, preds, missing=len(missing), unmatched=len(unmatched))
    if as_json:
        out_console.print_json(json.dumps(report.as_dict(), ensure_ascii=False))
        return
    summary = Table(title=f"{report.records} records")
    for column in ("text acc", "word acc", "overall acc", "precision", "recall", "F1"):
        summary.add_column(column, justify="right")
    summary.add_row(
        *map(
            _fmt,
            [
                report.text_accuracy,
                report.word_accuracy,
                report.overall_accuracy,
                report.micro.precision,
                report.micro.recall,
                report.micro.f1,
            ],
        )
    )
    out_console.print(summary)
    if report.per_type:
        detail = Table(title="per type (strict spans)")
        for column in ("type", "precision", "recall", "F1", "gold", "pred"):
            detail.add_column(column, justify="left" if column == "type" else "right")
        for key, c in report.per_type.items():
            detail.add_row(
                key, _fmt(c.precision), _fmt(c.recall), _fmt(c.f1), str(c.gold), str(c.pred)
            )
        out_console.print(detail)
    if missing:
        logger.warning(
            f"{len(missing)} gold ids have no prediction (scored as empty), e.g. {missing[0]}"
        )
    if unmatched:
        logger.warning(
            f"{len(unmatched)} predictions match no gold id (ignored), e.g. {unmatched[0]}"
        )


def datasets(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="shared data folder (default: $GIELLM_DATA or ../shared/data)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
) -> None:
    """List the readers, their tasks and label sets, and record counts of the shared splits."""
    from giellm.data.registry import FORMATS, LICENSES, dataset_path, shared_data_dir

    root = data_dir or shared_data_dir()
    if data_dir is not None and not data_dir.is_dir():
        raise GiellmError(f"{data_dir}: no such directory")
    rows: list[dict[str, Any]] = []
    for fmt in FORMATS.values():
        counts = {}
        for split in fmt.splits:
            path = None if root is None else dataset_path(fmt, split, root)
            if path is not None and path.exists():
                counts[split] = sum(1 for _ in fmt.read(path, fmt.tasks[0]))
        rows.append(
            {
                "format": fmt.name,
                "description": fmt.description,
                "tasks": fmt.tasks,
                "labels": {t: fmt.schema(t).as_dict() for t in fmt.tasks if t in fmt.schemas},
                "counts": counts,
                "license": LICENSES.get(fmt.name),
            }
        )
    if as_json:
        out_console.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table(title=f"giellm readers (data: {root or 'not found'})", show_lines=True)
    for column in ("format", "tasks", "label sets", "train", "dev", "license"):
        table.add_column(column)
    for row in rows:
        sets = []
        for task, labels in row["labels"].items():
            for name, values in labels.items():
                if values:
                    shown = ", ".join(values[:9]) + (" …" if len(values) > 9 else "")
                    sets.append(f"{task} {name} ({len(values)}): {shown}")
        table.add_row(
            f"{row['format']}\n[dim]{row['description']}[/dim]",
            " ".join(row["tasks"]),
            "\n".join(sets) or "any",
            str(row["counts"].get("train", "–")),
            str(row["counts"].get("dev", "–")),
            row["license"] or "your data's own",
        )
    out_console.print(table)


def grammar(
    task: Annotated[str, typer.Option("--task", "-t", help="TC SA NER RE EE PAS")],
    schema: Annotated[
        str | None, typer.Option("--schema", help="a dataset whose label sets it allows")
    ] = None,
    text: Annotated[
        str | None,
        typer.Option("--text", help="the input text: spans then must be substrings of it"),
    ] = None,
    grammar_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="gbnf (llama.cpp: --grammar-file, the server's `grammar`) or ebnf (vLLM / "
            "xgrammar): the same GBNF-style text",
        ),
    ] = "gbnf",
) -> None:
    """Print the layout grammar of a task, for llama.cpp (GBNF) or vLLM / xgrammar (EBNF)."""
    from giellm.constraints.ebnf import layout_grammar
    from giellm.inference.extractor import dataset_schema
    from giellm.tasks import LabelSchema, get_task

    if grammar_format not in ("gbnf", "ebnf"):
        raise GiellmError(f"--format {grammar_format!r}: use gbnf or ebnf")
    name = get_task(task).name
    labels = LabelSchema() if schema is None else dataset_schema(schema, name)
    if text is not None and not text:
        raise GiellmError("--text: give a non-empty text, or leave it out")
    sys.stdout.write(layout_grammar(name, labels, text))
