"""Peak memory and speed of `giellm predict` on glibc's malloc and on jemalloc, same run.

`giellm predict` (and serve, report) re-execute themselves with jemalloc preloaded where the
system has it (`giellm.allocator`); `GIELLM_ALLOCATOR=system` keeps glibc's malloc. This runs
the README's main job (the default model on the 534 stockmark dev sentences, batch 64) both
ways, alternating, `--rounds` times: wall seconds, peak RSS of the process (its `ru_maxrss`)
and F1, which must be the same. Writes results/predict_allocator.json.

Run: OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/predict_allocator.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe

from giellm.allocator import find_jemalloc
from giellm.data.jsonl import read_jsonl, write_jsonl
from giellm.data.registry import load
from giellm.evaluation.metrics import score

GIELLM = str(Path(sys.executable).with_name("giellm"))
ALLOCATORS = {"glibc": "system", "jemalloc": "jemalloc"}


def predict(records: Path, out: Path, allocator: str) -> dict[str, Any]:
    """One `giellm predict` run: seconds and peak RSS (MiB)."""
    env = dict(os.environ, GIELLM_ALLOCATOR=ALLOCATORS[allocator], OMP_WAIT_POLICY="PASSIVE")
    command = [GIELLM, "-q", "predict", str(records), "--schema", "stockmark", "-o", str(out)]
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(child.pid, 0)  # reaps the child: its own peak RSS
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"giellm predict failed on {allocator} (exit code {code})")
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="results/predict_allocator.json")
    args = parser.parse_args()
    if find_jemalloc() is None:
        raise SystemExit("jemalloc is not installed (Debian/Ubuntu: apt install libjemalloc2)")
    gold = load("stockmark", "dev", "NER")
    work = Path(tempfile.mkdtemp(prefix="giellm-allocator-"))
    records = work / "stockmark-dev.jsonl"
    write_jsonl(records, gold)
    runs = []
    for round_ in range(args.rounds):
        for allocator in ALLOCATORS:
            out = work / f"pred-{allocator}-{round_}.jsonl"
            run = predict(records, out, allocator)
            f1 = score(gold, list(read_jsonl(out))).as_dict()["f1"]
            run |= {"allocator": allocator, "round": round_, "f1": round(f1, 4)}
            runs.append(run)
            print(
                f"round {round_ + 1} {allocator:>8}: {run['seconds']:6.1f} s, peak RSS "
                f"{run['peak_rss_mib']:6.0f} MiB, F1 {run['f1']:.4f}",
                flush=True,
            )
    if len({r["f1"] for r in runs}) != 1:
        print("warning: the F1 differs between runs", {r["f1"] for r in runs})
    summary = {}
    for allocator in ALLOCATORS:
        mine = [r for r in runs if r["allocator"] == allocator]
        seconds = statistics.median(r["seconds"] for r in mine)
        summary[allocator] = {
            "median_seconds": seconds,
            "records_per_second": round(len(gold) / seconds, 2),
            "median_peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in mine),
        }
    result = {
        "command": "giellm predict stockmark-dev.jsonl --schema stockmark (the default model)",
        "records": len(gold),
        "summary": summary,
        "runs": runs,
        "machine": describe(),
    }
    print(json.dumps(summary, indent=1))
    Path(args.out).write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
