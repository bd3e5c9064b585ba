"""Start-up: `giellm extract` from invocation to its first line of output, cold and warm.

Cold: an empty giellm cache (a fresh `GIELLM_HOME`, so the packaged GGUF's parts are joined,
checked and its HF config, tokenizer and tensor index made again) and the model files dropped
from the OS page cache (`posix_fadvise(DONTNEED)` on the GGUF parts, the shipped adapter and
torch's libraries), as on the first run after install. Warm: the same command again, cache
built and files in memory, as every later run. Each case runs `--rounds` times, alternating,
and every run must print the same record. Writes results/startup.json.

Run: OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/startup.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

SENTENCE = "ソフトバンクグループの孫正義会長は福岡市で記者会見を開いた。"
COMMAND = [sys.executable, "-m", "giellm", "extract", SENTENCE, "--task", "NER"]


def model_files() -> list[Path]:
    """The files a cold start reads from disk: the GGUF parts, the adapter, torch's libraries."""
    import importlib.util

    from giellm.models.bases import GEMMA_3_270M, part_files

    roots = []
    for name in ("giellm", "torch"):
        spec = importlib.util.find_spec(name)
        if spec and spec.origin:
            roots.append(Path(spec.origin).parent)
    files = [f for root in roots for f in root.rglob("*") if f.is_file()]
    return part_files(GEMMA_3_270M) + [f for f in files if f.stat().st_size > 1_000_000]


def drop_from_page_cache(files: list[Path]) -> int:
    """Ask the kernel to forget these files' pages; returns the bytes asked about."""
    total = 0
    for path in files:
        with open(path, "rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        total += path.stat().st_size
    return total


def first_line(env: dict[str, str]) -> tuple[float, str]:
    """Seconds from invocation to the first output line, and that line (the process is then
    waited for, so nothing of it runs into the next measurement)."""
    start = time.perf_counter()
    process = subprocess.Popen(COMMAND, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert process.stdout is not None
    line = process.stdout.readline().decode("utf-8").strip()
    seconds = time.perf_counter() - start
    process.wait(timeout=600)
    if process.returncode != 0 or not line:
        raise SystemExit(f"giellm extract failed (exit code {process.returncode})")
    return seconds, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="results/startup.json")
    args = parser.parse_args()
    files = model_files()
    times: dict[str, list[float]] = {"cold": [], "warm": []}
    lines: set[str] = set()
    for round_ in range(args.rounds):
        home = Path(tempfile.mkdtemp(prefix="giellm-home-"))
        env = {**os.environ, "GIELLM_HOME": str(home), "OMP_WAIT_POLICY": "PASSIVE"}
        try:
            dropped = drop_from_page_cache(files)
            for case in ("cold", "warm"):
                seconds, line = first_line(env)
                times[case].append(seconds)
                lines.add(line)
                print(f"round {round_ + 1} {case}: {seconds:.2f} s", flush=True)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    if len(lines) != 1:
        raise SystemExit(f"runs disagree: {sorted(lines)}")
    result = {
        "command": "giellm extract SENTENCE --task NER (no --model: the default model)",
        "cold": "fresh GIELLM_HOME and the model files dropped from the page cache",
        "warm": "the same command again",
        "page_cache_dropped_mib": round(dropped / 2**20),
        "seconds": {case: [round(t, 2) for t in ts] for case, ts in times.items()},
        "median_seconds": {case: round(statistics.median(ts), 2) for case, ts in times.items()},
        "output": json.loads(lines.pop()),
        "machine": describe(),
    }
    print(json.dumps(result, ensure_ascii=False, indent=1))
    Path(args.out).write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
