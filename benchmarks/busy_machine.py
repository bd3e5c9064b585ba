"""The README's main job on a busy machine and an idle one, under each OpenMP wait setting.

`giellm predict` runs the 534 stockmark dev sentences with `OMP_WAIT_POLICY=ACTIVE` (OpenMP's
spinning waits, what torch did before giellm chose), giellm's own setting (passive waits, threads
from the usable CPUs) and passive waits after a ~10 us spin (`GOMP_SPINCOUNT=1000`: faster when
the machine runs nothing else): on an idle machine, then while another process keeps the cores
busy (a 2-thread torch matmul loop, like a second job on a CI runner or a laptop). Every output
must be the same. Writes results/busy_machine.json.

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

from machine import describe

GIELLM = str(Path(sys.executable).parent / "giellm")
SPIN = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"}  # a ~10 us spin, then sleep
LOAD = (
    "import torch\n"
    "torch.set_num_threads(2)\n"
    "a = torch.randn(1024, 1024)\n"
    "while True:\n"
    "    a = (a @ a).clamp(-1, 1)\n"
)


def predict(records: Path, out: Path, model: str, setting: dict[str, str]) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))} | setting
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
        policies = {"active": {"OMP_WAIT_POLICY": "ACTIVE"}, "giellm": {}, "spin": SPIN}
        seconds: dict[str, dict[str, float]] = {"idle": {}, "busy": {}}
        outputs = set()
        for machine in seconds:
            load = subprocess.Popen([sys.executable, "-c", LOAD]) if machine == "busy" else None
            try:
                time.sleep(2 if load else 0)
                for name, policy in policies.items():
                    out = Path(tmp) / f"{machine}-{name}.jsonl"
                    seconds[machine][name] = predict(records, out, args.model, policy)
                    outputs.add(out.read_bytes())
            finally:
                if load is not None:
                    load.kill()
    result = {
        "job": "giellm predict, 534 stockmark dev sentences, process start to file written",
        "model": args.model,
        "load": "a second process: 2-thread torch matmul loop",
        "settings": {
            "active": "OMP_WAIT_POLICY=ACTIVE",
            "giellm": "giellm's default: OMP_WAIT_POLICY=PASSIVE",
            "spin": "OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=1000",
        },
        "seconds": seconds,
        "busy_slowdown": {k: round(seconds["busy"][k] / seconds["idle"][k], 2) for k in policies},
        "outputs_identical": len(outputs) == 1,
        "machine": describe(),
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
