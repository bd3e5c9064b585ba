"""Loading the packaged Gemma 3 270M base: cold (empty cache) and warm, against transformers.

Each figure comes from a fresh Python process, so imports count too, as they do for a user:
- cold: a new `$GIELLM_HOME`; the five package parts are joined and sha256-checked, the HF
  config, tokenizer and tensor index are made; then the weights are loaded;
- warm: the same process again on the filled cache;
- transformers: `from_pretrained(dir, gguf_file=...)` on the same joined file, for reference;
- `giellm extract --model gemma-3-270m` from invocation to its printed record (warm cache).

Run: .venv/bin/python benchmarks/gemma_load.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIELLM = str(Path(sys.executable).parent / "giellm")

STEPS = """
import json, time
t0 = time.perf_counter()
import torch
from giellm.models.bases import load_base, load_base_tokenizer, resolve_base
t1 = time.perf_counter()
source = resolve_base("gemma-3-270m")
t2 = time.perf_counter()
tokenizer = load_base_tokenizer(source)
t3 = time.perf_counter()
model = load_base(source, dtype=torch.float32)
t4 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "join_and_prepare": t2 - t1, "tokenizer": t3 - t2,
                  "weights": t4 - t3, "total": t4 - t0}))
"""

TRANSFORMERS = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
import torch
from transformers import AutoModelForCausalLM
path = Path(sys.argv[1])
AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
print(json.dumps({"total": time.perf_counter() - t0}))
"""


def _run(code: str, home: str, *args: str) -> dict[str, float]:
    env = {**os.environ, "GIELLM_HOME": home}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    )
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return {k: round(v, 1) for k, v in figures.items()}


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        cold = _run(STEPS, home)
        warm = _run(STEPS, home)
        gguf = next(Path(home, "bases").glob("*.gguf"))
        reference = _run(TRANSFORMERS, home, str(gguf))
        started = time.perf_counter()
        subprocess.run(
            [GIELLM, "extract", "--model", "gemma-3-270m", "東京の会社。", "--task", "NER"],
            env={**os.environ, "GIELLM_HOME": home},
            capture_output=True,
            check=True,
        )
        first_output = round(time.perf_counter() - started, 1)
    result = {
        "cold_seconds": cold,
        "warm_seconds": warm,
        "transformers_gguf_loader_seconds": reference["total"],
        "extract_first_output_warm_seconds": first_output,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))
    Path("results/gemma_load.json").write_text(json.dumps(result, indent=1) + "\n")
    print("wrote results/gemma_load.json")


if __name__ == "__main__":
    main()
