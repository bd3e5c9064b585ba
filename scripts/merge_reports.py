"""Merge report folders written by `giellm report` over disjoint cases into one report.

On 2 cores, two reports over halves of the cases, each with `--threads 1`, keep both cores
busy with small-batch decoding, whose per-operation overhead a second thread in one process
does not share. This joins their rows and rewrites report.md, report.json and the plots
in OUT, as one report over every case would have written them.

Run: .venv/bin/python scripts/merge_reports.py OUT FOLDER [FOLDER ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from giellm.errors import GiellmError
from giellm.evaluation.report import check_report_folder, write_report


def merged(folders: list[Path]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All rows and one context (cases joined in order); a case in two folders is an error."""
    rows: list[dict[str, Any]] = []
    context: dict[str, Any] = {}
    cases: list[str] = []
    for folder in folders:
        path = folder / "report.json"
        if not path.is_file():
            raise GiellmError(f"{path}: not found (is {folder} a report folder?)")
        data = json.loads(path.read_text(encoding="utf-8"))
        for case in data["context"].get("cases", []):
            if case in cases:
                raise GiellmError(f"{path}: case {case} is in an earlier folder too")
            cases.append(case)
        context = {**data["context"], **context}
        rows += data["rows"]
    return rows, {**context, "cases": cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args()
    try:
        rows, context = merged(args.folders)
        check_report_folder(args.out)
        print(f"wrote {write_report(args.out, rows, ours='giellm', context=context)}")
    except GiellmError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
