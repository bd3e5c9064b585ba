#!/usr/bin/env bash
# Every benchmark, one after another; each prints its figures and writes results/*.json.
# About 90 minutes on the 2-core machine. Never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
.venv/bin/python benchmarks/convert_speed.py
.venv/bin/python benchmarks/predict_speed.py
.venv/bin/python benchmarks/extract_speed.py
.venv/bin/python benchmarks/train_speed.py          # Gemma 270M LoRA: old path vs new, ~40 min
.venv/bin/python benchmarks/busy_machine.py
.venv/bin/python benchmarks/serve_load.py
.venv/bin/python benchmarks/dev_eval.py --out results/giellm_ja_dev.json   # the default model
.venv/bin/python benchmarks/dev_eval.py --model tiny --out results/tiny_ja_dev.json
# Gemma 3 270M: load times (cold and warm cache), then extraction with the CPU-trained stockmark
# adapter (train it first: giellm train --config configs/gemma-stockmark-cpu.yaml, about an hour)
.venv/bin/python benchmarks/gemma_load.py
if [ -d build/gemma-stockmark-cpu/final ]; then
    .venv/bin/python benchmarks/gemma_cpu.py --model build/gemma-stockmark-cpu/final
fi
