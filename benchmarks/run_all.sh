#!/usr/bin/env bash
# Every benchmark, one after another; each prints its figures and writes results/*.json.
# About 20 minutes on the 2-core machine. Never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
.venv/bin/python benchmarks/convert_speed.py
.venv/bin/python benchmarks/predict_speed.py
.venv/bin/python benchmarks/extract_speed.py
.venv/bin/python benchmarks/train_speed.py
.venv/bin/python benchmarks/serve_load.py
.venv/bin/python benchmarks/dev_eval.py
