"""Dev-split figures of a model on every shared task it was trained for, with timings.

Each case predicts a shared dev split (constrained decoding, the model's own label sets narrowed
to the dataset's) and scores it with `giellm.evaluation.metrics`; a majority-label row shows what a
classifier must beat. Prints a table and writes the JSON to results/.

Run: .venv/bin/python benchmarks/dev_eval.py [--model DIR] [--limit N] [--out results/x.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from collections import Counter
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from giellm.data.registry import load
from giellm.evaluation.metrics import score
from giellm.evaluation.systems import DEFAULT_CASES, spread
from giellm.inference.extractor import Extractor
from giellm.progress import record_progress
from giellm.threads import configure_threads


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: the default)")
    parser.add_argument(
        "--limit", type=int, default=None, help="N dev records per case, spread over the split"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="tokens a window may generate (default: the model's giellm.json)",
    )
    parser.add_argument("--cases", default=None, help="comma list like stockmark:NER,jrte:SA")
    parser.add_argument("--out", default="results/giellm_ja_dev.json")
    args = parser.parse_args()
    cases = [tuple(c.split(":")) for c in args.cases.split(",")] if args.cases else DEFAULT_CASES

    configure_threads()  # the usable CPUs (affinity, cgroup quota)
    extractor = Extractor(
        args.model, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens
    )
    rows = []
    for name, task in cases:
        gold = spread(load(name, "dev", task), args.limit)
        before = (
            extractor.stats.dropped,
            extractor.stats.truncated,
            extractor.stats.generated_tokens,
        )
        started = time.perf_counter()
        with record_progress() as bar:
            progress = bar.add_task(f"{name} {task}", total=len(gold))
            advance = functools.partial(lambda task_id, _: bar.advance(task_id), progress)
            preds = [p.example for p in extractor.predict(gold, schema=name, on_record=advance)]
        seconds = time.perf_counter() - started
        report = score(gold, preds)
        labels = Counter(g.label for g in gold)
        majority = labels.most_common(1)[0][1] / len(gold) if None not in labels else None
        rows.append(
            {
                "dataset": name,
                "task": task,
                **{k: v for k, v in report.as_dict().items() if k != "per_type"},
                "majority_label_accuracy": majority,
                "seconds": seconds,
                "records_per_second": len(gold) / seconds,
                "generated_tokens": extractor.stats.generated_tokens - before[2],
                "decoder_dropped_items": extractor.stats.dropped - before[0],
                "truncated_windows": extractor.stats.truncated - before[1],
            }
        )
        print(
            json.dumps(
                {k: rows[-1][k] for k in ("dataset", "task", "f1", "text_accuracy", "seconds")}
            ),
            flush=True,
        )
        write(Path(args.out), args, rows, complete=len(rows) == len(cases))

    print_table(args.model, rows)
    print(f"wrote {args.out}")


def write(out: Path, args: argparse.Namespace, rows: list[dict], *, complete: bool) -> None:
    """The figures so far, rewritten whole after every case: a stopped run keeps what it
    measured, and `complete` says whether every case ran."""
    result = {
        "model": args.model or "default (giellm-ja: Gemma 3 270M + adapter)",
        "limit": args.limit,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "constrained": True,
        "complete": complete,
        "cases": rows,
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    partial.replace(out)


def print_table(model: str | None, rows: list[dict]) -> None:
    table = Table(title=f"dev figures of {model or 'the default model'}")
    for column in (
        "dataset",
        "task",
        "n",
        "text acc",
        "majority",
        "word acc",
        "P",
        "R",
        "F1",
        "rec/s",
        "dropped",
    ):
        table.add_column(column, justify="left" if column in ("dataset", "task") else "right")
    for r in rows:
        table.add_row(
            r["dataset"], r["task"], str(r["records"]), _fmt(r["text_accuracy"]),
            _fmt(r["majority_label_accuracy"]), _fmt(r["word_accuracy"]), _fmt(r["precision"]),
            _fmt(r["recall"]), _fmt(r["f1"]), f"{r['records_per_second']:.1f}",
            str(r["decoder_dropped_items"]),
        )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
