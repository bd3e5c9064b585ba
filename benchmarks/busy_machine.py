"""The README's main job on a busy machine: OpenMP busy-waiting (before) against passive waits.

Another process keeps the cores busy (a 2-thread torch matmul loop, like a second job on a CI
runner or a laptop); `giellm predict` then runs the 534 stockmark dev sentences twice: with
`OMP_WAIT_POLICY=ACTIVE` (OpenMP's spinning waits, what torch did before giellm chose) and with
giellm's own setting (passive waits, threads from the usable CPUs). Both outputs must be the same.
Writes results/busy_machine.json.

Run: .venv/bin/python benchmarks/busy_machine.py [--model tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIELLM = str(Path(sys.executable).parent / "giellm")
LOAD = (
    "import torch\n"
    "torch.set_num_threads(2)\n"
    "a = torch.randn(1024, 1024)\n"
    "while True:\n"
    "    a = (a @ a).clamp(-1, 1)\n"
)


def predict(records: Path, out: Path, model: str, policy: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    started = time.perf_counter()
    command = [GIELLM, "predict", str(records), "--schema", "stockmark", "-o", str(out)]
    subprocess.run([*command, "--model", model], check=True, capture_output=True, env=env)
    return round(time.perf_counter() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--out", default="results/busy_machine.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        records = Path(tmp) / "dev.jsonl"
        source = "../shared/data/stockmark_ner_wikipedia/dev.json"
        convert = [GIELLM, "convert", source, "--from", "stockmark", "--task", "NER"]
        subprocess.run([*convert, "-o", str(records)], check=True, capture_output=True)
        idle = predict(records, Path(tmp) / "idle.jsonl", args.model, None)
        load = subprocess.Popen([sys.executable, "-c", LOAD])
        try:
            time.sleep(2)
            active = predict(records, Path(tmp) / "active.jsonl", args.model, "ACTIVE")
            passive = predict(records, Path(tmp) / "passive.jsonl", args.model, None)
        finally:
            load.kill()
        outputs = [(Path(tmp) / f"{name}.jsonl").read_bytes() for name in ("active", "passive")]
        same = outputs[0] == outputs[1]
    result = {
        "job": "giellm predict, 534 stockmark dev sentences, process start to file written",
        "model": args.model,
        "load": "a second process: 2-thread torch matmul loop",
        "idle_seconds": idle,
        "busy_seconds_omp_active_before": active,
        "busy_seconds_giellm_default_after": passive,
        "slowdown_before": round(active / idle, 2),
        "slowdown_after": round(passive / idle, 2),
        "outputs_identical": same,
        "cpu_count": len(os.sched_getaffinity(0)),
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
