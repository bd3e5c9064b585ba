"""Training throughput of `giellm train`: the old path against the new one, in the same run.

The old path is what training did before: float32 base, no autocast, logits over the whole
vocabulary, the system's malloc. The new one: jemalloc where installed, the frozen base stored in
bfloat16 (where the CPU has bf16 matrix units), bf16 autocast, the loss over the training
vocabulary, compiled decoder layers; a speed row of the new one on the system's malloc; and the
new one with the whole vocabulary, whose stockmark dev F1 after the same steps (same seed) says
what restricting the loss to the training vocabulary costs in accuracy. All train LoRA (r=32,
every linear layer, same seed, same batches) through the real command, each in its own process;
figures come from the trainer's log. Speed rows run at the recipe's batch (64 rows, at most 4096
tokens) on stockmark and on the full mix; the loss curves run `--steps` steps at a small batch so
that the old path's 200 steps stay affordable. Records/s and target tokens/s are measured after
the first steps (compilation, allocator warm-up); peak RSS is the process's. On a shared virtual
machine the hypervisor's steal time (in /proc/stat) is recorded with each row: figures measured
under heavy steal are slower for every path alike.

Writes results/train_speed.json and, with the loss curves of both paths over the same steps of
stockmark NER, results/train_speed.png.

Run: .venv/bin/python benchmarks/train_speed.py [--base gemma-3-270m] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from giellm.training.run import iter_log

GIELLM = str(Path(sys.executable).parent / "giellm")
PATHS = {
    "old": "--load-dtype float32 --mixed-precision no --loss-vocab lm_head --compile false".split(),
    "new": "--compile true".split(),  # load_dtype, mixed_precision: auto; loss_vocab: targets
    # the same head path and the same target positions, every vocabulary row ranked: what the
    # restriction to the training vocabulary alone changes (the model's own head under bf16
    # ran at ~25 tokens/s: bf16 logits of every position over 262,144 rows)
    "new-whole-vocab": "--compile true --loss-vocab whole".split(),
}
# the old path ran on the system's malloc; so does a speed row of the new one (what jemalloc,
# where installed, is worth)
SYSTEM_MALLOC = {"GIELLM_ALLOCATOR": "system"}
MIX = "configs/giellm-ja.yaml"


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs since boot; (0, 0) where /proc/stat is absent."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return 0, 0
    return fields[7], sum(fields[:8])


def train(
    base: str,
    path: str,
    data: str,
    steps: int,
    batch: int,
    out: Path,
    log_every: int = 5,
    batch_tokens: int = 4096,
) -> dict[str, Any]:
    """One `giellm train` process; its log entries and peak RSS."""
    command = [GIELLM, "train", "--output-dir", str(out), "--max-steps", str(steps)]
    if data == "mix":
        command += ["--config", MIX, "--base-model", base]
    else:
        command += ["--base-model", base, "--data", data, "--lora", "--lora-r", "32"]
        command += ["--lora-alpha", "64", "--lora-dropout", "0", "--max-len", "512"]
    command += ["--batch-size", str(batch), "--batch-tokens", str(batch_tokens), "--lr", "4e-4"]
    command += ["--eval-every", "0", "--save-every", "0", "--log-every", str(log_every)]
    command += ["--seed", "0"]
    command += PATHS[path.removesuffix("-system-malloc").removesuffix("-big-batch")]
    system = path == "old" or path.endswith("-system-malloc")
    env = os.environ | (SYSTEM_MALLOC if system else {})
    steal_before, total_before = cpu_ticks()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    steal_after, total_after = cpu_ticks()
    steal, total = steal_after - steal_before, total_after - total_before
    stderr = child.stderr.read().decode() if child.stderr else ""
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
    entries = list(iter_log(out / "train_log.jsonl"))
    head = next(e for e in entries if "threads" in e)  # precision, threads, allocator
    log = [e for e in entries if "loss" in e]
    return {
        "log": log,
        "log_head": head,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "steal_share": round(steal / total, 3) if total else None,
    }


def rates(log: list[dict[str, Any]], head: dict[str, Any], warmup: int) -> dict[str, float]:
    """Records/s, tokens/s and target tokens/s between the first entry past `warmup` steps
    (compilation, allocator warm-up) and the last. Batches hold rows of similar length, so a
    window of a few dozen batches holds longer or shorter records than the split does on
    average: `epoch_records_per_s` (the window's tokens/s over the split's mean tokens per
    record) is the rate an epoch runs at, comparable between runs; `records_per_s` is the
    window's own."""
    first = next(e for e in log if e["step"] >= warmup)
    last = log[-1]
    seconds = last["elapsed"] - first["elapsed"]
    tokens_per_s = (last["tokens"] - first["tokens"]) / seconds
    per_record = head["train_tokens"] / head["train_records"]
    return {
        "epoch_records_per_s": round(tokens_per_s / per_record, 2),
        "records_per_s": round((last["records"] - first["records"]) / seconds, 2),
        "tokens_per_s": round(tokens_per_s),
        "target_tokens_per_s": round((last["target_tokens"] - first["target_tokens"]) / seconds),
        "split_tokens_per_record": round(per_record, 1),
        "window_tokens_per_record": round(
            (last["tokens"] - first["tokens"]) / (last["records"] - first["records"]), 1
        ),
        "padding": round(last["padding"], 4),
        "seconds": round(last["elapsed"], 1),
    }


def dev_counts(model: Path) -> list[Any]:
    """Per stockmark dev sentence (whole split, constrained decoding): its strict entity
    `Counts`, matched as `giellm evaluate` matches them; their sum gives the micro F1."""
    from giellm.data.registry import load
    from giellm.evaluation.metrics import Counts, items, span_counts
    from giellm.inference.extractor import Extractor

    gold = load("stockmark", "dev", "NER")
    predicted = [p.example for p in Extractor(model).predict(gold, schema="stockmark")]
    return [
        sum(span_counts(items(g), items(p)).values(), Counts())
        for g, p in zip(gold, predicted, strict=True)
    ]


def f1_of(counts: list[Any]) -> float:
    from giellm.evaluation.metrics import Counts

    return sum(counts, Counts()).f1 or 0.0


def paired_difference(a: list[Any], b: list[Any], rounds: int = 2000) -> dict[str, Any]:
    """F1(a) - F1(b) with a 95% paired bootstrap interval over the dev sentences: a
    difference whose interval holds 0 is within the noise of this dev split."""
    import random

    rng = random.Random(0)
    n = len(a)
    draws = []
    for _ in range(rounds):
        pick = [rng.randrange(n) for _ in range(n)]
        draws.append(f1_of([a[i] for i in pick]) - f1_of([b[i] for i in pick]))
    draws.sort()
    low, high = draws[int(0.025 * rounds)], draws[int(0.975 * rounds) - 1]
    return {
        "difference": round(f1_of(a) - f1_of(b), 4),
        "ci95": [round(low, 4), round(high, 4)],
        "within_noise": low <= 0 <= high,
    }


def plot(curves: dict[str, list[dict[str, Any]]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, log in curves.items():
        ax.plot([e["step"] for e in log], [e["loss"] for e in log], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (target tokens)")
    ax.set_yscale("log")
    ax.set_title(f"{title}, 2 CPU cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def speed_rows(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Throughput at the recipe's batch (and the new path at `--big-batch` too): stockmark and
    the full mix, old path against new. The old path is slow enough that a few steps measure
    it (and its whole-vocabulary float32 logits leave no memory for a bigger batch); the new
    one runs past its compilation."""
    rows = []
    chosen = args.speed_paths.split(",")
    big_rows, big_tokens = (int(v) for v in args.big_batch.split(":"))
    for data in args.speed_data.split(","):
        recipe = (args.batch_size, args.batch_tokens)
        paths = [("old", args.old_steps, 2, recipe), ("new", args.speed_steps, 10, recipe)]
        if data != "mix":
            paths.append(("new-system-malloc", args.speed_steps, 10, recipe))
        if big_rows:
            paths.append(("new-big-batch", args.speed_steps, 10, (big_rows, big_tokens)))
        for path, steps, warmup, (batch, tokens) in (p for p in paths if p[0] in chosen):
            out = tmp / f"speed-{path}-{data.replace(':', '-')}"
            done = train(args.base, path, data, steps, batch, out, 1, tokens)
            row = {"part": "speed", "path": path, "data": data, "steps": steps}
            row |= {"batch_size": batch, "batch_tokens": tokens, "measured_after_step": warmup}
            row |= rates(done["log"], done["log_head"], warmup)
            row |= {"peak_rss_mib": done["peak_rss_mib"]}
            row |= {"allocator": done["log_head"]["allocator"], "steal_share": done["steal_share"]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def curve_rows(
    args: argparse.Namespace, tmp: Path, chosen: list[str]
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The same `--steps` stockmark steps (same seed, same batches) on every path: loss curves,
    and the dev F1 of each (the new path with and without the training-vocabulary loss)."""
    rows, curves, counts = [], {}, {}
    for path in chosen:
        out = tmp / f"curve-{path}"
        done = train(args.base, path, "stockmark:NER", args.steps, args.curve_batch, out)
        row = {"part": "curve", "path": path, "data": "stockmark:NER", "steps": args.steps}
        row |= {"batch_size": args.curve_batch, "measured_after_step": 10}
        row |= rates(done["log"], done["log_head"], 10) | {"peak_rss_mib": done["peak_rss_mib"]}
        row |= {"allocator": done["log_head"]["allocator"], "steal_share": done["steal_share"]}
        row["final_loss"] = round(done["log"][-1]["loss"], 4)
        counts[path] = dev_counts(out / "final")
        row["stockmark_dev_f1"] = round(f1_of(counts[path]), 4)
        print(json.dumps(row), flush=True)
        rows.append(row)
        curves[f"{path} path"] = done["log"]
    for other, part in (("new-whole-vocab", "vocabulary restriction"), ("old", "old path")):
        if {"new", other} <= counts.keys():
            difference = paired_difference(counts["new"], counts[other])
            rows.append({"part": part, f"new minus {other} F1": difference})
            print(json.dumps(rows[-1]), flush=True)
    return rows, curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="gemma-3-270m")
    parser.add_argument("--steps", type=int, default=200, help="stockmark steps per loss curve")
    parser.add_argument("--curve-batch", type=int, default=8, help="batch of the loss curves")
    parser.add_argument("--batch-size", type=int, default=64, help="batch of the speed rows")
    parser.add_argument("--speed-steps", type=int, default=30, help="new-path speed steps")
    parser.add_argument("--old-steps", type=int, default=8, help="old-path speed steps")
    parser.add_argument("--batch-tokens", type=int, default=4096, help="of the speed rows")
    parser.add_argument("--speed-data", default="stockmark:NER,mix")
    parser.add_argument("--speed-paths", default="old,new,new-system-malloc,new-big-batch")
    parser.add_argument(
        "--big-batch", default="128:8192", help="rows:tokens of the new path's big-batch row"
    )
    parser.add_argument("--parts", default="speed,curves")
    parser.add_argument(
        "--paths", default=",".join(PATHS), help="loss curves of: " + ", ".join(PATHS)
    )
    parser.add_argument("--out", default="results/train_speed.json")
    args = parser.parse_args()
    chosen = [p.strip() for p in args.paths.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        speed = speed_rows(args, Path(tmp)) if "speed" in args.parts else []
        curves_run, curves = [], {}
        if "curves" in args.parts:
            curves_run, curves = curve_rows(args, Path(tmp), chosen)
    by = {(r["path"], r["data"]): r["epoch_records_per_s"] for r in speed}
    speedup = {
        f"{path} over old, {data}": round(by[(path, data)] / by[("old", data)], 2)
        for path in ("new", "new-big-batch")
        for data in ("stockmark:NER", "mix")
        if (path, data) in by and ("old", data) in by
    }
    if ("new-system-malloc", "stockmark:NER") in by:
        speedup["jemalloc over system malloc, stockmark:NER"] = round(
            by[("new", "stockmark:NER")] / by[("new-system-malloc", "stockmark:NER")], 2
        )
    final = {r["path"]: r["final_loss"] for r in curves_run if "path" in r}
    f1: dict[str, Any] = {
        r["path"]: r["stockmark_dev_f1"] for r in curves_run if "stockmark_dev_f1" in r
    }
    f1 |= {k: v for r in curves_run for k, v in r.items() if k.startswith("new minus")}
    result = {
        "base": args.base,
        "lora": "r=32, alpha 64, every linear layer, dropout 0",
        "batch_tokens_of_speed_rows": args.batch_tokens,
        "runs": speed + curves_run,
        "speedup_epoch_records_per_s": speedup,
        "final_loss": final,
        "stockmark_dev_f1": f1,
        "loss_curves": {
            name: [[e["step"], round(e["loss"], 4)] for e in log] for name, log in curves.items()
        },
        "cpu_count": len(os.sched_getaffinity(0)),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE (giellm's default)"),
        "python": platform.python_version(),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    title = f"{args.base} LoRA r=32 on stockmark NER, batch {args.curve_batch}"
    if curves:
        plot(curves, Path(args.out).with_suffix(".png"), title)
    print(json.dumps({"speedup_epoch_records_per_s": speedup, "final_loss": final, "dev_f1": f1}))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.png')}")


if __name__ == "__main__":
    main()
