"""How far item scores can be trusted: precision of predicted entities by score, and what a
threshold trades (precision, recall, F1 at each cut), on a shared dev split.

Predicts the split once with the default model (constrained decoding), then bins the predicted
entities by their score (the geometric mean of their tokens' probabilities) and counts how many
match a gold entity exactly (span and type). Prints a table; writes results/score_calibration.json
and a plot (precision per score bin; P/R/F1 against the threshold).

Run: OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/score_calibration.py
     [--case stockmark:NER] [--model DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import json
from itertools import pairwise
from pathlib import Path
from typing import Any

from giellm.data.registry import load
from giellm.evaluation.systems import parse_case, spread
from giellm.inference.extractor import Extractor
from giellm.progress import record_progress
from giellm.schema import Example

BINS = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0001]
CUTS = [0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99]


def judged(gold: list[Example], predicted: list[Example]) -> list[tuple[float, bool]]:
    """(score, exactly right) of every predicted entity."""
    out = []
    for g, p in zip(gold, predicted, strict=True):
        truth = {(e.start, e.end, e.type) for e in g.entities}
        out += [(e.score or 0.0, (e.start, e.end, e.type) in truth) for e in p.entities]
    return out


def at_cut(items: list[tuple[float, bool]], gold_total: int, cut: float) -> dict[str, Any]:
    kept = [right for score, right in items if score >= cut]
    tp = sum(kept)
    precision = tp / len(kept) if kept else None
    recall = tp / gold_total if gold_total else None
    f1 = 2 * tp / (len(kept) + gold_total) if kept or gold_total else None
    return {"threshold": cut, "kept": len(kept), "precision": precision, "recall": recall, "f1": f1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="stockmark:NER")
    parser.add_argument("--model", default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("results/score_calibration.json"))
    args = parser.parse_args()
    dataset, task = parse_case(args.case)
    gold = spread(load(dataset, "dev", task), args.limit)
    extractor = Extractor(args.model, batch_size=64)
    with record_progress() as bar:
        job = bar.add_task(f"predicting {dataset} dev", total=len(gold))
        asked = [Example(id=g.id, task=task, text=g.text) for g in gold]
        found = [
            p.example
            for p in extractor.predict(asked, schema=dataset, on_record=lambda _: bar.advance(job))
        ]
    items = judged(gold, found)
    gold_total = sum(len(g.entities) for g in gold)
    bins = []
    for low, high in pairwise(BINS):
        inside = [right for score, right in items if low <= score < high]
        bins.append(
            {
                "from": low,
                "to": min(high, 1.0),
                "entities": len(inside),
                "precision": sum(inside) / len(inside) if inside else None,
            }
        )
    cuts = [at_cut(items, gold_total, c) for c in CUTS]
    print(f"{'score':<12}{'entities':>9}{'precision':>11}")
    for b in bins:
        shown = "–" if b["precision"] is None else f"{b['precision']:.3f}"
        print(f"[{b['from']:.2f}, {b['to']:.2f}){b['entities']:>9}{shown:>11}")
    print(f"\n{'threshold':<10}{'kept':>6}{'P':>8}{'R':>8}{'F1':>8}")
    for c in cuts:
        print(
            f"{c['threshold']:<10}{c['kept']:>6}{c['precision'] or 0:>8.3f}"
            f"{c['recall'] or 0:>8.3f}{c['f1'] or 0:>8.3f}"
        )
    result = {
        "case": args.case,
        "records": len(gold),
        "gold_entities": gold_total,
        "model": args.model or "default",
        "bins": bins,
        "thresholds": cuts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    plot(bins, cuts, args.out.with_suffix(".png"), args.case)
    print(f"wrote {args.out}")


def plot(bins: list[dict[str, Any]], cuts: list[dict[str, Any]], out: Path, case: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    shown = [b for b in bins if b["precision"] is not None]
    labels = [f"{b['from']:.2f}–{b['to']:.2f}\n(n={b['entities']})" for b in shown]
    left.bar(range(len(shown)), [b["precision"] for b in shown])
    left.set_xticks(range(len(shown)), labels, fontsize=7)
    left.set_ylim(0, 1)
    left.set_xlabel("entity score")
    left.set_ylabel("precision (exact span and type)")
    left.set_title(f"{case}: precision by score")
    for key in ("precision", "recall", "f1"):
        right.plot(
            [c["threshold"] for c in cuts], [c[key] or 0 for c in cuts], marker="o", label=key
        )
    right.set_ylim(0, 1)
    right.set_xlabel("threshold")
    right.set_title("what a threshold trades")
    right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main()
