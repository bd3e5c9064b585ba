"""Training throughput: tokens/s of `giellm train` on this machine, full fine-tuning and LoRA.

Fine-tunes the embedded model for a few steps on stockmark NER (the real command, real data)
and reads the tokens/s the trainer logged. Writes results/train_speed.json.

Run: .venv/bin/python benchmarks/train_speed.py [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from giellm.models.loading import DEFAULT_MODEL_DIR
from giellm.training.run import iter_log

GIELLM = str(Path(sys.executable).parent / "giellm")


def run(steps: int, lora: bool, out: Path) -> dict[str, object]:
    command = [GIELLM, "train", "--base-model", str(DEFAULT_MODEL_DIR), "--output-dir", str(out)]
    command += ["--data", "stockmark:NER", "--max-steps", str(steps), "--batch-size", "16"]
    command += ["--lora", "--lora-r", "16"] if lora else ["--full"]
    subprocess.run(command, check=True, capture_output=True)
    logged = [e for e in iter_log(out / "train_log.jsonl") if "tokens_per_s" in e]
    rates = [e["tokens_per_s"] for e in logged[1:]] or [logged[-1]["tokens_per_s"]]
    return {"mode": "LoRA r=16" if lora else "full", "steps": steps,
            "tokens_per_second": round(sum(rates) / len(rates), 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default="results/train_speed.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(args.steps, lora, Path(tmp) / str(lora)) for lora in (False, True)]
    result = {"model": "embedded default (5.5M Llama)", "batch_size": 16, "runs": rows,
              "cpu_count": os.cpu_count()}  # fmt: skip
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
