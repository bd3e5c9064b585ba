"""Batch prediction speed: `giellm predict` on the 534 stockmark dev sentences, end to end.

Times the real command (process start, model load, generation, writing) with the embedded model,
with and without constrained decoding, and counts what the decoder had to drop from each.
Goal (issue 3): under 2 minutes on 2 CPU cores with constraints on, and nothing dropped.

Run: .venv/bin/python benchmarks/predict_speed.py [--model DIR] [--batch-size N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from giellm.data.jsonl import read_jsonl
from giellm.data.registry import FORMATS, dataset_path, shared_data_dir

GIELLM = str(Path(sys.executable).parent / "giellm")


def run(
    dev: Path, out: Path, model: str | None, batch_size: int, constrain: bool
) -> dict[str, object]:
    command = [GIELLM, "predict", str(dev), "--from", "stockmark", "--task", "NER", "-o", str(out)]
    command += ["--batch-size", str(batch_size), "--constrain" if constrain else "--no-constrain"]
    if model:
        command += ["--model", model]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    summary = " ".join(done.stderr.split("wrote ")[-1].split())
    dropped = re.search(r"(\d+) items dropped", summary)
    truncated = re.search(r"(\d+) windows cut", summary)
    records = sum(1 for _ in read_jsonl(out))
    return {
        "constrained": constrain,
        "records": records,
        "wall_seconds": round(seconds, 2),
        "records_per_second": round(records / seconds, 2),
        "decoder_dropped_items": int(dropped.group(1)) if dropped else None,
        "truncated_windows": int(truncated.group(1)) if truncated else None,
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="results/predict_speed.json")
    args = parser.parse_args()
    data_dir = shared_data_dir()
    if data_dir is None:
        raise SystemExit("no shared data directory found; set GIELLM_DATA")
    dev = dataset_path(FORMATS["stockmark"], "dev", data_dir)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for constrain in (True, False):
            runs.append(run(dev, Path(tmp) / "pred.jsonl", args.model, args.batch_size, constrain))
            print(json.dumps(runs[-1], ensure_ascii=False))
    result = {
        "command": "giellm predict stockmark dev.json --from stockmark --task NER -o OUT",
        "model": args.model or "embedded default",
        "batch_size": args.batch_size,
        "goal_seconds": 120,
        "runs": runs,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    Path(args.out).write_text(
        json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
