"""Extraction throughput: giellm's batched extraction versus the naive way, in one run.

Same model, same records (stockmark dev NER), same greedy decoding and token budget:
- naive: Hugging Face `generate` one record at a time, no constraints, no batching;
- giellm unconstrained: continuous batching (rows leave the batch as they end, waiting windows
  join), longest windows first, KV cache written in place;
- giellm constrained: the same plus the grammar guide (the default);
- giellm constrained at a smaller batch (`--compare-batch`), to show what the batch size buys.
Also the peak memory (max RSS) of the real `giellm predict` process with the embedded model.
Goals (issue 5): batched >= 8x naive; constraints cost <= 15%; predict peak memory <= 1 GiB.

Run: .venv/bin/python benchmarks/extract_speed.py [--records N] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.progress import track

from giellm.data.jsonl import write_jsonl
from giellm.data.registry import load
from giellm.inference.extractor import Extractor
from giellm.models.sequences import prompt_ids

GIELLM = str(Path(sys.executable).parent / "giellm")


def naive(extractor: Extractor, texts: list[str], max_new_tokens: int) -> tuple[float, int]:
    """One `generate` call per record, as a first script would do it."""
    model, tok = extractor.model, extractor.tokenizer
    tokens = 0
    started = time.perf_counter()
    for text in track(texts, description="naive one-by-one"):
        ids = torch.tensor([prompt_ids(tok, text, "NER")])
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        row = out[0, ids.shape[1] :].tolist()
        tokens += row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
    return time.perf_counter() - started, tokens


def batched(
    extractor: Extractor, records: list, label: str, repeats: int
) -> tuple[float, int, int]:
    """Median seconds of `repeats` runs after a short warm-up, generated tokens, dropped items.

    The runs take a few seconds each, so a single one is at the mercy of the machine's noise;
    the naive run takes half a minute and amortises its own start-up.
    """
    list(extractor.predict(records[:4], schema="stockmark"))
    times = []
    for k in range(repeats):
        before = extractor.stats.generated_tokens, extractor.stats.dropped
        started = time.perf_counter()
        for _ in track(
            extractor.predict(records, schema="stockmark"),
            total=len(records),
            description=f"{label} ({k + 1}/{repeats})",
        ):
            pass
        times.append(time.perf_counter() - started)
    return (
        statistics.median(times),
        extractor.stats.generated_tokens - before[0],
        extractor.stats.dropped - before[1],
    )


def predict_peak_rss(records: list, model: str | None) -> float:
    """Max RSS in MiB of a real `giellm predict` child process."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        write_jsonl(src, records)
        command = [GIELLM, "predict", str(src), "-o", str(out), "--schema", "stockmark"]
        command += ["--model", model] if model else []
        subprocess.run(command, check=True, capture_output=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _figures(seconds: float, tokens: int, records: int) -> dict[str, float]:
    return {
        "seconds": round(seconds, 2),
        "records_per_second": round(records / seconds, 2),
        "generated_tokens": tokens,
        "generated_tokens_per_second": round(tokens / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--records", type=int, default=534, help="stockmark dev records (534: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--compare-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each batched way")
    parser.add_argument("--out", default="results/extract_speed.json")
    args = parser.parse_args()
    records = load("stockmark", "dev", "NER")[: args.records]
    texts = [r.text for r in records]

    free = Extractor(args.model, constrained=False, batch_size=args.batch_size)
    constrained = Extractor(args.model, batch_size=args.batch_size)
    budget = free.max_new_tokens
    naive_s, naive_tokens = naive(free, texts, budget)
    free_s, free_tokens, _ = batched(free, records, "giellm, unconstrained", args.repeats)
    con_s, con_tokens, dropped = batched(constrained, records, "giellm, constrained", args.repeats)
    small = Extractor(args.model, batch_size=args.compare_batch)
    small_s, small_tokens, _ = batched(
        small, records, f"giellm, constrained, batch {args.compare_batch}", args.repeats
    )
    rss = predict_peak_rss(load("stockmark", "dev", "NER"), args.model)

    result = {
        "records": len(records),
        "model": args.model or "embedded default",
        "batch_size": args.batch_size,
        "timing": f"naive: one run; batched: median of {args.repeats} runs after a warm-up",
        "max_new_tokens": budget,
        "naive": _figures(naive_s, naive_tokens, len(records)),
        "batched_unconstrained": _figures(free_s, free_tokens, len(records)),
        "batched_constrained": {
            **_figures(con_s, con_tokens, len(records)),
            "decoder_dropped_items": dropped,
        },
        f"batched_constrained_batch_{args.compare_batch}": {
            **_figures(small_s, small_tokens, len(records)),
            "speedup_vs_naive": round(naive_s / small_s, 2),
        },
        "speedup_batched_constrained_vs_naive": round(naive_s / con_s, 2),
        "speedup_batched_unconstrained_vs_naive": round(naive_s / free_s, 2),
        "constraint_overhead": round(con_s / free_s - 1, 3),
        # per generated token: free decoding may run longer (repeats) or shorter than constrained
        "constraint_overhead_per_token": round(
            (con_s / con_tokens) / (free_s / free_tokens) - 1, 3
        ),
        "predict_534_peak_rss_mib": round(rss, 1),
        "goals": {"speedup": 8, "constraint_overhead": 0.15, "peak_rss_mib": 1024},
    }
    save(result, args.out)


def save(result: dict, out: str) -> None:
    """Print `result` with the machine it was measured on, and write it to `out`."""
    result |= {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    text = json.dumps(result, ensure_ascii=False, indent=1)
    print(text)
    Path(out).write_text(text + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
