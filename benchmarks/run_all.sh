#!/usr/bin/env bash
# Every benchmark, one after another; each prints its figures and writes results/*.json.
# About 90 minutes on the 2-core machine. Never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
.venv/bin/python benchmarks/convert_speed.py
.venv/bin/python benchmarks/predict_speed.py
.venv/bin/python benchmarks/extract_speed.py
.venv/bin/python benchmarks/train_speed.py          # Gemma 270M LoRA: old path vs new, ~45 min
.venv/bin/python benchmarks/busy_machine.py
.venv/bin/python benchmarks/predict_allocator.py    # glibc vs jemalloc: peak RSS of the main job
.venv/bin/python benchmarks/serve_load.py
.venv/bin/python benchmarks/startup.py
.venv/bin/python benchmarks/dev_eval.py --out results/giellm_ja_dev.json \
    --cases stockmark:NER,livedoor:TC,jrte:SA,kwdlc:NER,kwdlc:PAS,jacred:RE,fkc:NER,wac:NER,wac:PAS
.venv/bin/python benchmarks/dev_eval.py --model tiny --out results/tiny_ja_dev.json
# Gemma 3 270M: load times (cold and warm cache), then extraction with the default adapter
.venv/bin/python benchmarks/gemma_load.py
.venv/bin/python benchmarks/gemma_cpu.py --model src/giellm/default_model
# the default model's learning curve, where its training run is still in build/
if [ -f build/giellm-ja/train_log.jsonl ]; then
    .venv/bin/python benchmarks/learning_curve.py --log build/giellm-ja/train_log.jsonl \
        --checkpoints build/giellm-ja/checkpoint-* build/giellm-ja/final --limit 40
fi
