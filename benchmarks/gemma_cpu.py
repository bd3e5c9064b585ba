"""Gemma 3 270M on a CPU: giellm's extraction versus naive HF `generate`, same model, one run.

- giellm default: `Extractor.predict` of all stockmark dev records as users get it: constrained,
  batched, logits over the batch's output vocabulary, dtype auto (bfloat16 for a GGUF base on a
  CPU with native bfloat16, else float32);
- naive: Hugging Face `generate` one record at a time (float32, no batching, no constraint),
  timed on a sample spread over stockmark dev (`--naive-records`; a full pass takes ~18 min),
  its records/s taken as the rate for the whole split;
- giellm float32, and float32 with full-vocabulary logits (what the output vocabulary buys);
- int8: float32 after dynamic int8 quantization of the decoder's linear layers (torch.ao),
  with how many predictions and how much F1 it changes;
- the real `giellm predict` process on all records (defaults): wall time and peak RSS.
Goals (issue 11): >= 8x naive, <= 90 s end to end, <= 2 GiB RSS.

Run: .venv/bin/python benchmarks/gemma_cpu.py --model build/gemma-stockmark-cpu/final
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from extract_speed import naive, save  # the embedded model's naive reference and writer
from rich.progress import track

from giellm.data.jsonl import write_jsonl
from giellm.data.registry import load
from giellm.evaluation.metrics import score
from giellm.inference.extractor import Extractor

GIELLM = str(Path(sys.executable).parent / "giellm")


def timed_predict(extractor: Extractor, records: list, label: str) -> dict:
    before = extractor.stats.generated_tokens
    started = time.perf_counter()
    predictions = [
        p.example
        for p in track(
            extractor.predict(records, schema="stockmark"), total=len(records), description=label
        )
    ]
    seconds = time.perf_counter() - started
    tokens = extractor.stats.generated_tokens - before
    return {
        "seconds": round(seconds, 1),
        "records_per_second": round(len(records) / seconds, 2),
        "generated_tokens": tokens,
        "generated_tokens_per_second": round(tokens / seconds, 1),
        "f1": round(score(records, predictions).micro.f1 or 0.0, 4),
        "_predictions": predictions,
    }


def predict_process(records: list, model: str, batch_size: int) -> dict:
    """Wall time and max RSS of a real `giellm predict` child process (cache warm)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        write_jsonl(src, records)
        command = [GIELLM, "predict", str(src), "-o", str(out), "--schema", "stockmark"]
        command += ["--model", model, "--batch-size", str(batch_size)]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(rss, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Gemma-based model (adapter dir)")
    parser.add_argument("--records", type=int, default=534)
    parser.add_argument("--naive-records", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="results/gemma_cpu.json")
    args = parser.parse_args()
    records = load("stockmark", "dev", "NER")[: args.records]
    sample = records[:: max(1, len(records) // args.naive_records)][: args.naive_records]

    process = predict_process(records, args.model, args.batch_size)
    started = time.perf_counter()
    extractor = Extractor(args.model, batch_size=args.batch_size)  # dtype auto
    load_s = time.perf_counter() - started
    dtype = str(next(extractor.model.parameters()).dtype).removeprefix("torch.")
    budget = extractor.max_new_tokens
    giellm = timed_predict(extractor, records, f"giellm, default ({dtype})")
    del extractor

    fp32 = Extractor(args.model, batch_size=args.batch_size, dtype="float32")
    naive_s, naive_tokens = naive(fp32, [r.text for r in sample], budget)
    naive_rate = len(sample) / naive_s
    single = timed_predict(fp32, records, "giellm, float32")
    fp32.backend.output_vocab = False  # type: ignore[attr-defined]
    full_vocab = timed_predict(fp32, records, "giellm, float32, full-vocabulary logits")

    torch.ao.quantization.quantize_dynamic(
        fp32.model.base_model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
    )
    int8 = timed_predict(fp32, records, "giellm, float32 + int8 decoder")

    def same(figures: dict) -> int:
        pairs = zip(single["_predictions"], figures["_predictions"], strict=True)
        return sum(a == b for a, b in pairs)

    same_default, same_int8 = same(giellm), same(int8)
    for figures in (giellm, single, full_vocab, int8):
        figures.pop("_predictions")
    result = {
        "model": args.model,
        "records": len(records),
        "batch_size": args.batch_size,
        "max_new_tokens": budget,
        "default_dtype": dtype,
        "load_seconds_in_process": round(load_s, 1),
        "naive_float32": {
            "records": len(sample),
            "seconds": round(naive_s, 1),
            "records_per_second": round(naive_rate, 3),
            "generated_tokens_per_second": round(naive_tokens / naive_s, 1),
        },
        "giellm_constrained_default": {**giellm, "same_predictions_as_float32": same_default},
        "giellm_constrained_float32": single,
        "giellm_constrained_float32_full_vocab_logits": full_vocab,
        "giellm_constrained_float32_int8": {**int8, "same_predictions_as_float32": same_int8},
        "speedup_default_vs_naive": round(giellm["records_per_second"] / naive_rate, 2),
        "speedup_float32_vs_naive": round(single["records_per_second"] / naive_rate, 2),
        "output_vocab_speedup": round(full_vocab["seconds"] / single["seconds"], 2),
        "predict_process_default": process,
        "goals": {"speedup": 8, "end_to_end_seconds": 90, "peak_rss_mib": 2048},
    }
    save(result, args.out)


if __name__ == "__main__":
    main()
