"""Where `Extractor.predict` spends its time with the default model, against this CPU's bounds.

One run of the default model (Gemma 3 270M + the shipped adapter, dtype auto) on the stockmark
dev sentences, timed by part without a profiler's overhead: forward hooks on the decoder body
time every prefill and decode step (and count their rows and columns, padding included), and
thin timing wrappers around the decoding module's own functions time the output head, the
greedy picks with their grammar guides, the chosen-token log-probabilities and the KV-cache
joins and drops. What is left is Python per step (the step loop, row bookkeeping, decoding
the outputs into records).

The bounds are measured on the same machine in the same run: the decoder's linear layers at the
run's own shapes (decode: one row per live record; prefill: the mean tokens of its prefill
forwards), as `F.linear` in the model's dtype, give the matmul-bound time of the work the run
did; a large tensor copy gives the memory bandwidth, and so the time one decode step needs just
to read the weights. Writes results/predict_profile.json.

Run: OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/predict_profile.py [--records N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from machine import describe

from giellm.data.registry import load
from giellm.evaluation.metrics import score
from giellm.evaluation.systems import spread
from giellm.inference.extractor import Extractor
from giellm.models import decoding
from giellm.schema import Example

seconds: dict[str, float] = defaultdict(float)
calls: dict[str, int] = defaultdict(int)


def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - started
            calls[name] += 1

    return wrapper


def hook_forwards(body: torch.nn.Module, shapes: list[tuple[int, int, float]]) -> None:
    """Every forward of the decoder body: (rows, columns, seconds)."""
    started: list[float] = []

    def before(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        started.append(time.perf_counter())

    def after(_module: Any, _args: Any, kwargs: dict[str, Any], _out: Any) -> None:
        rows, columns = kwargs["input_ids"].shape
        shapes.append((int(rows), int(columns), time.perf_counter() - started.pop()))

    body.register_forward_pre_hook(before, with_kwargs=True)
    body.register_forward_hook(after, with_kwargs=True)


def linear_shapes(model: Any) -> list[tuple[int, int]]:
    """(in, out) of every linear layer of the decoder layers (the output head apart)."""
    head = model.get_output_embeddings()
    return [
        (m.in_features, m.out_features)
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not head
    ]


def linear_seconds_per_row(shapes: list[tuple[int, int]], rows: int, dtype: Any) -> float:
    """Seconds one row costs in all the linear layers, `rows` at a time (median of 5 runs)."""
    unique = Counter(shapes)
    total = 0.0
    for (n_in, n_out), count in unique.items():
        x, w = torch.randn(rows, n_in, dtype=dtype), torch.randn(n_out, n_in, dtype=dtype)
        for _ in range(3):
            torch.nn.functional.linear(x, w)
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(4):
                torch.nn.functional.linear(x, w)
            runs.append((time.perf_counter() - started) / 4)
        total += count * statistics.median(runs)
    return total / rows


def copy_bandwidth() -> float:
    """Bytes per second of reading and writing a 512 MiB tensor (median of 5)."""
    source = torch.ones(128 * 1024 * 1024, dtype=torch.float32)
    target = torch.empty_like(source)
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        target.copy_(source)
        runs.append(time.perf_counter() - started)
    return 2 * source.numel() * 4 / statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=None, help="stockmark dev (spread)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--drop-share", type=int, default=decoding._DROP_SHARE)
    parser.add_argument("--refill-share", type=int, default=decoding._REFILL_SHARE)
    parser.add_argument("--out", default="results/predict_profile.json")
    args = parser.parse_args()
    decoding._DROP_SHARE, decoding._REFILL_SHARE = args.drop_share, args.refill_share

    extractor = Extractor(None, batch_size=args.batch_size)
    model = extractor.backend.model  # type: ignore[attr-defined]
    extractor.extract(["東京で会見した。"], "NER")  # warm: first-call costs are not the work
    gold = spread(load("stockmark", "dev", "NER"), args.records)
    asked = [Example(id=g.id, task="NER", text=g.text) for g in gold]

    forwards: list[tuple[int, int, float]] = []
    hook_forwards(model.base_model, forwards)
    live_rows = []
    choose = timed("greedy picks + grammar guides", decoding.choose)

    def counted_choose(logits: torch.Tensor, *rest: Any) -> Any:
        live_rows.append(int(logits.shape[0]))
        return choose(logits, *rest)

    decoding.choose = counted_choose
    decoding.chosen_logprobs = timed("chosen-token log-probabilities", decoding.chosen_logprobs)
    decoding._join = timed("KV-cache joins", decoding._join)
    decoding._keep = timed("KV-cache drops", decoding._keep)
    head = decoding._OutputHead
    head.logits = timed("output head (batch vocabulary)", head.logits)  # type: ignore[method-assign]
    before = extractor.stats.generated_tokens
    started = time.perf_counter()
    predicted = [p.example for p in extractor.predict(asked, schema="stockmark")]
    total = time.perf_counter() - started
    generated = extractor.stats.generated_tokens - before
    f1 = score(gold, predicted).as_dict()["f1"]

    prefill = [(r, c, s) for r, c, s in forwards if c > 1]
    decode = [(r, c, s) for r, c, s in forwards if c == 1]
    parts = {
        "prefill forward": sum(s for *_, s in prefill),
        "decode forward": sum(s for *_, s in decode),
        **dict(seconds),
    }
    parts["Python per step and the rest"] = total - sum(parts.values())

    dtype = next(model.parameters()).dtype
    shapes = linear_shapes(model)
    prefill_cells = sum(r * c for r, c, _ in prefill)
    decode_rows = sum(r for r, _, _ in decode)
    mean_prefill_tokens = round(prefill_cells / max(1, len(prefill)))
    prefill_bound = prefill_cells * linear_seconds_per_row(shapes, mean_prefill_tokens, dtype)
    steps_by_rows = Counter(r for r, _, _ in decode)  # each batch size measured once
    decode_bound = sum(
        n * r * linear_seconds_per_row(shapes, r, dtype) for r, n in steps_by_rows.items()
    )
    weight_bytes = sum(i * o for i, o in shapes) * torch.finfo(dtype).bits // 8
    bandwidth = copy_bandwidth()
    flops_per_token = 2 * sum(i * o for i, o in shapes)
    decode_steps = len(decode)
    result = {
        "model": "embedded default (Gemma 3 270M + giellm-ja adapter)",
        "dtype": str(dtype).replace("torch.", ""),
        "records": len(gold),
        "batch_size": args.batch_size,
        "drop_share": args.drop_share,
        "refill_share": args.refill_share,
        "seconds": round(total, 2),
        "records_per_second": round(len(gold) / total, 2),
        "generated_tokens": generated,
        "f1": round(f1, 4) if f1 is not None else None,
        "parts_seconds": {k: round(v, 2) for k, v in parts.items()},
        "parts_share": {k: round(v / total, 3) for k, v in parts.items()},
        "calls": dict(calls),
        "prefill": {
            "forwards": len(prefill),
            "cells": prefill_cells,
            "mean_tokens_per_forward": mean_prefill_tokens,
            "linear_bound_seconds": round(prefill_bound, 2),
            "achieved_gflops": round(
                prefill_cells * flops_per_token / parts["prefill forward"] / 1e9, 1
            ),
        },
        "decode": {
            "steps": decode_steps,
            "rows_computed": decode_rows,
            "mean_rows": round(decode_rows / max(1, decode_steps), 1),
            # rows fed a pad after they finished (they leave together, see decoding._DROP_SHARE)
            "finished_rows_computed": decode_rows
            - (sum(live_rows) - sum(r for r, _, _ in prefill)),
            "step_ms": round(1000 * parts["decode forward"] / max(1, decode_steps), 1),
            "linear_bound_seconds": round(decode_bound, 2),
            "weight_read_bound_ms": round(1000 * weight_bytes / bandwidth, 2),
            "achieved_gflops": round(
                decode_rows * flops_per_token / parts["decode forward"] / 1e9, 1
            ),
        },
        "forward_vs_linear_bound": round(
            (parts["prefill forward"] + parts["decode forward"]) / (prefill_bound + decode_bound), 2
        ),
        "linear_gflop_per_token": round(flops_per_token / 1e9, 3),
        "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1),
        "machine": describe(),
    }
    print(
        f"{len(gold)} records in {total:.1f} s ({result['records_per_second']} rec/s), F1 {f1:.3f}"
    )
    for name, value in parts.items():
        print(f"  {name:<36}{value:>8.2f} s  {value / total:>6.1%}")
    print(f"prefill: {result['prefill']}")
    print(f"decode:  {result['decode']}")
    print(f"forward time / linear-layer bound: {result['forward_vs_linear_bound']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
