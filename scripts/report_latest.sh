#!/usr/bin/env bash
# reports/latest in one command: giellm-ja, GiNZA, 3/5-shot prompting of the untuned base, the
# tiny model and the MRE ablation (configs/ablation-gemma.yaml, trained first with
# `giellm train --ablation ...`; runs missing here are trained by the report) on the shared dev
# splits. Two reports over halves of the cases, one per core (`--threads 1`), merged into one.
# LIMIT=150 (records a case) and FEWSHOT=40 (a k-shot row's records; half of it for livedoor
# and fkc, whose k-shot prompts hold k 256-character articles) keep it inside ~45 min on 2
# cores; LIMIT=0 scores whole splits (~1 h 20 min a half). Logs: build/reportA.log, build/reportB.log.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1
LIMIT=${LIMIT:-150}
FEWSHOT=${FEWSHOT:-40}
OUT=${OUT:-reports/latest}
limit=()
[ "$LIMIT" != 0 ] && limit=(--limit "$LIMIT")
run_half() {  # folder, cases, k-shot records
    .venv/bin/giellm --threads 1 report -o "$1" --cases "$2" "${limit[@]}" \
        --fewshot-limit "$3" --ablation configs/ablation-gemma.yaml > "$1.log" 2>&1
}
mkdir -p build
start=$(date +%s)
run_half build/reportA livedoor:TC,fkc:NER $((FEWSHOT / 2)) &
first=$!
run_half build/reportB stockmark:NER,jrte:SA,kwdlc:NER,kwdlc:PAS,jacred:RE,wac:NER,wac:PAS "$FEWSHOT" &
second=$!
failed=0
wait "$first" || { echo "build/reportA failed: see build/reportA.log" >&2; failed=1; }
wait "$second" || { echo "build/reportB failed: see build/reportB.log" >&2; failed=1; }
[ "$failed" = 0 ] || exit 1
.venv/bin/python scripts/merge_reports.py "$OUT" build/reportA build/reportB
echo "reports: $OUT/report.md in $(( ($(date +%s) - start) / 60 )) min"
