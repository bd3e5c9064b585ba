"""Learning curve of a training run: dev figures of its checkpoints against minutes of training.

Checkpoint directories given with `--checkpoints` are evaluated here on `--limit` records per
case, spread over each split, with constrained decoding on the merged model; steps without a
directory come from the run's own `eval` log entries (a run with `eval_generate: N` scores N
dev records per pool at each checkpoint, on the model being trained); `--reuse` keeps the
evaluated points of an earlier output (checkpoints rotated away since) at steps the log has no
figures for. The minutes come from the run's train_log.jsonl (`elapsed` at the step). Writes
the JSON and a plot.

Run: .venv/bin/python benchmarks/learning_curve.py --log build/giellm-ja/train_log.jsonl \
        [--checkpoints build/curve/checkpoint-*] [--reuse results/learning_curve.json] --limit 40
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from giellm.data.registry import load
from giellm.evaluation.metrics import score
from giellm.evaluation.systems import DEFAULT_CASES, main_metric, spread
from giellm.inference.extractor import Extractor
from giellm.training.run import iter_log

CASES = DEFAULT_CASES


def minutes_at(log: Path) -> dict[int, float]:
    """Minutes of training at each logged step; a resumed run's clock restarts at zero, so it
    is shifted by the minutes the killed run had taken to reach the checkpoint."""
    minutes: dict[int, float] = {}
    offset = 0.0
    for entry in iter_log(log):
        if "resumed_from" in entry:
            offset = minutes.get(entry["step"], offset)
        elif "elapsed" in entry:
            minutes[entry["step"]] = offset + entry["elapsed"] / 60
    return minutes


def logged_points(log: Path, minutes: dict[int, float]) -> dict[int, dict[str, Any]]:
    """The run's own dev figures at its checkpoints, by step (a later entry for a step wins)."""
    return {
        e["step"]: {"checkpoint": f"log step {e['step']}", "step": e["step"]}
        | {"minutes": round(minutes[e["step"]], 1)}
        | {k: round(v, 4) for k, v in e["dev"].items()}
        for e in iter_log(log)
        if e.get("stage") == "eval"
    }


def evaluated_point(directory: Path, step: int, minutes: float, limit: int) -> dict[str, Any]:
    extractor = Extractor(directory, batch_size=64)
    row: dict[str, Any] = {"checkpoint": str(directory), "step": step, "minutes": minutes}
    for dataset, task in CASES:
        gold = spread(load(dataset, "dev", task), limit)
        predicted = [p.example for p in extractor.predict(gold, schema=dataset)]
        value = score(gold, predicted).as_dict()[main_metric(task)] or 0.0
        row[f"{dataset}:{task}"] = round(float(value), 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, nargs="*", default=[])
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--out", default="results/learning_curve.json")
    parser.add_argument("--plot", default="docs/learning_curve.png")
    parser.add_argument("--reuse", type=Path, help="an earlier output whose evaluated points stay")
    args = parser.parse_args()
    minutes = minutes_at(args.log)
    last = max(minutes)
    points = logged_points(args.log, minutes)
    if args.reuse:
        earlier = json.loads(args.reuse.read_text(encoding="utf-8"))
        if earlier["limit"] != args.limit:
            raise SystemExit(
                f"{args.reuse}: scored on {earlier['limit']} records, not {args.limit}"
            )
        kept = [p for p in earlier["points"] if not p["checkpoint"].startswith("log step")]
        points = {p["step"]: p for p in kept} | points  # the run's own log wins a step
    for directory in args.checkpoints:
        name = directory.name
        step = int(name.split("-")[1]) if name.startswith("checkpoint-") else last
        at = round(minutes.get(step, minutes[last]), 1)
        points[step] = evaluated_point(directory, step, at, args.limit)
        print(json.dumps(points[step]), flush=True)
    rows = [points[step] for step in sorted(points)]
    Path(args.out).write_text(json.dumps({"limit": args.limit, "points": rows}, indent=1) + "\n")
    plot(rows, Path(args.plot), args.limit)
    print(f"wrote {args.out} and {args.plot}")


def plot(points: list[dict[str, Any]], out: Path, limit: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for dataset, task in CASES:
        key = f"{dataset}:{task}"
        kind = "acc" if task in ("TC", "SA") else "F1"
        shown = [p for p in points if key in p]
        ax.plot([p["minutes"] for p in shown], [p[key] for p in shown], "o-", label=f"{key} {kind}")
    ax.set_xlabel("minutes of training (2 CPU cores)")
    ax.set_ylabel(f"dev figure ({limit} records per case)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title("giellm-ja: Gemma 3 270M + LoRA, the MRE mix")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main()
