"""Training throughput of `giellm train`: the old path against the new one, in the same run.

The old path is what training did before: float32 base, no autocast, logits over the whole
vocabulary. The new one: the frozen base stored in bfloat16 (where the CPU has bf16 matrix
units), bf16 autocast, the loss over the training vocabulary, compiled decoder layers; and the
new one with the whole vocabulary, whose stockmark dev F1 after the same steps (same seed) says
what restricting the loss to the training vocabulary costs in accuracy. All train
LoRA (r=32, every linear layer, same seed, same batches) through the real command, each in its own
process; figures come from the trainer's log. Records/s and target tokens/s are measured after the
first `--warmup` steps (compilation, allocator warm-up); peak RSS is the process's.

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
    "old": "--load-dtype float32 --mixed-precision no --train-vocab false --compile false".split(),
    "new": "--compile true".split(),  # load_dtype, mixed_precision, train_vocab: auto / on
    "new-whole-vocab": "--compile true --train-vocab false".split(),
}
MIX = "configs/giellm-ja.yaml"


def train(base: str, path: str, data: str, steps: int, batch: int, out: Path) -> dict[str, Any]:
    """One `giellm train` process; its log entries and peak RSS."""
    command = [GIELLM, "train", "--output-dir", str(out), "--max-steps", str(steps)]
    if data == "mix":
        command += ["--config", MIX, "--base-model", base]
    else:
        command += ["--base-model", base, "--data", data, "--lora", "--lora-r", "32"]
        command += ["--lora-alpha", "64", "--lora-dropout", "0", "--max-len", "512"]
    command += ["--batch-size", str(batch), "--batch-tokens", "4096", "--lr", "4e-4"]
    command += ["--eval-every", "0", "--save-every", "0", "--log-every", "5", "--seed", "0"]
    command += PATHS[path]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    stderr = child.stderr.read().decode() if child.stderr else ""
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
    log = [e for e in iter_log(out / "train_log.jsonl") if "loss" in e]
    return {"log": log, "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def rates(log: list[dict[str, Any]], warmup: int) -> dict[str, float]:
    """Records/s and target tokens/s between the first entry past `warmup` and the last."""
    first = next(e for e in log if e["step"] >= warmup)
    last = log[-1]
    seconds = last["elapsed"] - first["elapsed"]
    return {
        "records_per_s": round((last["records"] - first["records"]) / seconds, 2),
        "target_tokens_per_s": round((last["target_tokens"] - first["target_tokens"]) / seconds),
        "tokens_per_s": round(last["tokens_per_s"]),
        "padding": round(last["padding"], 4),
        "seconds": round(last["elapsed"], 1),
    }


def dev_f1(model: Path) -> float:
    """Strict entity F1 on the whole stockmark dev split, constrained decoding."""
    from giellm.data.registry import load
    from giellm.evaluation.metrics import score
    from giellm.inference.extractor import Extractor

    gold = load("stockmark", "dev", "NER")
    predicted = [p.example for p in Extractor(model).predict(gold, schema="stockmark")]
    return round(float(score(gold, predicted).as_dict()["f1"]), 4)


def plot(curves: dict[str, list[dict[str, Any]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, log in curves.items():
        ax.plot([e["step"] for e in log], [e["loss"] for e in log], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (target tokens)")
    ax.set_yscale("log")
    ax.set_title("Gemma 3 270M LoRA r=32 on stockmark NER, 2 CPU cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="gemma-3-270m")
    parser.add_argument("--steps", type=int, default=200, help="stockmark steps per path")
    parser.add_argument("--mix-steps", type=int, default=30, help="steps on the full mix")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--paths", default=",".join(PATHS), help="comma list of " + ", ".join(PATHS)
    )
    parser.add_argument("--out", default="results/train_speed.json")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, Any]]] = {}
    chosen = [p.strip() for p in args.paths.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for data, steps in (("stockmark:NER", args.steps), ("mix", args.mix_steps)):
            for path in chosen:
                if data == "mix" and path == "new-whole-vocab":
                    continue
                out = Path(tmp) / f"{path}-{data.replace(':', '-')}".replace(" ", "")
                done = train(args.base, path, data, steps, args.batch_size, out)
                row = {"path": path, "data": data, "steps": steps}
                row |= rates(done["log"], args.warmup) | {"peak_rss_mib": done["peak_rss_mib"]}
                if data != "mix" and path != "old":
                    row["stockmark_dev_f1"] = dev_f1(out / "final")
                print(json.dumps(row), flush=True)
                runs.append(row)
                if data != "mix":
                    curves[f"{path} path"] = done["log"]
    by = {(r["path"], r["data"]): r for r in runs}
    speedup = {
        data: round(by[("new", data)]["records_per_s"] / by[("old", data)]["records_per_s"], 2)
        for data in ("stockmark:NER", "mix")
    }
    final = {name: round(log[-1]["loss"], 4) for name, log in curves.items()}
    f1 = {r["path"]: r["stockmark_dev_f1"] for r in runs if "stockmark_dev_f1" in r}
    result = {
        "base": args.base,
        "lora": "r=32, alpha 64, every linear layer, dropout 0",
        "batch_size": args.batch_size,
        "batch_tokens": 4096,
        "runs": runs,
        "speedup_records_per_s": speedup,
        "final_loss": final,
        "stockmark_dev_f1": f1,
        "loss_curves": {
            name: [[e["step"], round(e["loss"], 4)] for e in log] for name, log in curves.items()
        },
        "cpu_count": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    plot(curves, Path(args.out).with_suffix(".png"))
    print(json.dumps({"speedup_records_per_s": speedup, "final_loss": final, "dev_f1": f1}))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.png')}")


if __name__ == "__main__":
    main()
