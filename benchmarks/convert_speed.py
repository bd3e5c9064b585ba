"""Conversion speed: read + validate + encode the 534 stockmark dev sentences, and decode back.

Prints the figures and writes results/convert_speed.json.
Run: .venv/bin/python benchmarks/convert_speed.py
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

from giellm.data.jsonl import dumps
from giellm.data.registry import FORMATS, dataset_path, shared_data_dir
from giellm.layout.format import decode, encode

REPEATS = 7


def main() -> None:
    data_dir = shared_data_dir()
    if data_dir is None:
        raise SystemExit("no shared data directory found; set GIELLM_DATA")
    fmt = FORMATS["stockmark"]
    path = dataset_path(fmt, "dev", data_dir)
    schema = fmt.schema("NER")
    convert_s, encode_s, decode_s = [], [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        records = list(fmt.read(path, "NER"))
        lines = [dumps(r) for r in records]  # what `giellm convert` writes
        convert_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        targets = [encode(r).target for r in records]
        encode_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        decoded = [decode(t, r, schema).example for t, r in zip(targets, records, strict=True)]
        decode_s.append(time.perf_counter() - started)
        assert decoded == records and len(lines) == 534
    figures = {
        "dataset": "stockmark_ner_wikipedia dev",
        "records": len(records),
        "convert_seconds_median": statistics.median(convert_s),
        "encode_seconds_median": statistics.median(encode_s),
        "decode_seconds_median": statistics.median(decode_s),
        "records_per_second_convert": len(records) / statistics.median(convert_s),
        "repeats": REPEATS,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for key, value in figures.items():
        print(f"{key:>28}: {value:.4f}" if isinstance(value, float) else f"{key:>28}: {value}")
    out = Path(__file__).resolve().parent.parent / "results" / "convert_speed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
