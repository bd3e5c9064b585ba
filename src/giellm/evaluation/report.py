"""`giellm report`: the rows of systems × shared dev splits (`giellm.evaluation.systems`) as one
Markdown report with tables, PNG plots and the JSON behind them."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from giellm.data.jsonl import atomic_writer
from giellm.errors import GiellmError
from giellm.evaluation.systems import main_metric
from giellm.files import probe_folder


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def results_table(rows: Sequence[dict[str, Any]]) -> str:
    """The main Markdown table: one line per dataset × system."""
    head = (
        "| dataset | task | system | n | text acc | word acc | overall acc | P | R | F1 | rec/s |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['task']} | {r['system']} | {r['records']} "
            f"| {_fmt(r['text_accuracy'])} | {_fmt(r['word_accuracy'])} "
            f"| {_fmt(r['overall_accuracy'])} | {_fmt(r['precision'])} | {_fmt(r['recall'])} "
            f"| {_fmt(r['f1'])} | {_fmt(r['records_per_second'], 1)} |"
        )
    return "\n".join(lines)


def comparisons(rows: Sequence[dict[str, Any]], ours: str) -> list[str]:
    """Plain sentences: per case, where `ours` wins or loses against each other system."""
    out = []
    cases = sorted({(r["dataset"], r["task"]) for r in rows}, key=lambda c: [*c])
    for dataset, task in cases:
        metric = main_metric(task)
        here = {r["system"]: r for r in rows if (r["dataset"], r["task"]) == (dataset, task)}
        if ours not in here or here[ours][metric] is None:
            continue
        mine = here[ours][metric]
        for name, r in here.items():
            if name == ours or r[metric] is None:
                continue
            verb = "beats" if mine > r[metric] else "loses to" if mine < r[metric] else "ties"
            out.append(
                f"- {dataset} {task}: {ours} {verb} {name} on {metric.replace('_', ' ')} "
                f"({mine:.3f} vs {r[metric]:.3f})."
            )
    return out


FIGURES = ("text_accuracy", "word_accuracy", "overall_accuracy", "precision", "recall", "f1")


def effect_metric(row: dict[str, Any]) -> str:
    """The ablation's figure for a case: overall accuracy (label and items both right) where
    its records carry a text-level label and items (fkc), where the Mutual Reinforcement Effect
    would show; else the case's main figure."""
    joint = main_metric(row["task"]) == "f1" and row.get("text_accuracy") is not None
    return "overall_accuracy" if joint else main_metric(row["task"])


def pool_seeds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per system and case: the mean of its seeds' figures, with `seeds` (how many)
    and `spread` ([lowest, highest] of the case's `effect_metric` over the seeds)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["system"], r["dataset"], r["task"]), []).append(r)
    out = []
    for runs in groups.values():
        pooled = dict(runs[0])
        for name in FIGURES:
            values = [r[name] for r in runs if r.get(name) is not None]
            pooled[name] = sum(values) / len(values) if values else None
        main = [r[effect_metric(r)] or 0.0 for r in runs]
        seconds = sum(r["seconds"] for r in runs)
        records = sum(r["records"] for r in runs)
        pooled |= {
            "seeds": len(runs),
            "spread": [min(main), max(main)],
            "seconds": round(seconds, 3),
            "records_per_second": round(records / seconds, 3) if seconds > 0 else None,
        }
        pooled.pop("seed", None)
        out.append(pooled)
    return out


def _with_spread(row: dict[str, Any], metric: str) -> str:
    value = f"{row['system']} {row[metric] or 0.0:.3f}"
    low, high = row.get("spread") or (None, None)
    if row.get("seeds", 1) > 1:
        return f"{value} ({row['seeds']} seeds: {low:.3f}–{high:.3f})"
    return value


def ablation_findings(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per case, the ablation variants ranked by its `effect_metric` (mean over seeds), in one
    sentence; a gap smaller than the seeds' spread is called noise."""
    out = []
    pooled = pool_seeds(rows)
    for dataset, task in dict.fromkeys((r["dataset"], r["task"]) for r in pooled):
        here = [r for r in pooled if (r["dataset"], r["task"]) == (dataset, task)]
        if len(here) < 2:
            continue
        metric = effect_metric(here[0])
        ranked = sorted(here, key=lambda r: -(r[metric] or 0.0))
        order = " > ".join(_with_spread(r, metric) for r in ranked)
        best, runner = ranked[0], ranked[1]
        if min(best["seeds"], runner["seeds"]) < 2:
            verdict = "one seed each: no noise estimate"
        elif best["spread"][0] <= runner["spread"][1]:
            verdict = f"{best['system']} vs {runner['system']}: within the seeds' spread (noise)"
        else:
            verdict = f"{best['system']} is ahead of {runner['system']} on every seed"
        name = metric.replace("_", " ")
        out.append(f"- {dataset} {task} ({name}): {order}; {verdict}.")
    return out


def _case_bars(
    rows: Sequence[dict[str, Any]],
) -> tuple[list[tuple[str, str]], list[str], dict[str, list[tuple[float, dict[str, Any]]]], float]:
    """Bar positions per system and one bar width: each case gets a slot for the systems that
    ran it, side by side (no empty gaps where a system skipped a case), and each system keeps
    one colour."""
    cases = list(dict.fromkeys((r["dataset"], r["task"]) for r in rows))
    systems = list(dict.fromkeys(r["system"] for r in rows))
    bars: dict[str, list[tuple[float, dict[str, Any]]]] = {s: [] for s in systems}
    most = 1
    for c, case in enumerate(cases):
        here = [r for r in rows if (r["dataset"], r["task"]) == case]
        most = max(most, len(here))
        slot = 0.8 / len(here)
        for i, row in enumerate(here):
            bars[row["system"]].append((c - 0.4 + slot * (i + 0.5), row))
    return cases, systems, bars, 0.8 / most


def plot_scores(
    rows: Sequence[dict[str, Any]],
    path: Path,
    metric_of: Callable[[dict[str, Any]], str] | None = None,
) -> None:
    """Grouped bars: each case's figure per system (`metric_of(row)`; default its main one),
    with the seeds' lowest-to-highest range as an error bar where rows pool several seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pick = metric_of or (lambda row: main_metric(row["task"]))
    short = {"f1": "F1", "text_accuracy": "acc", "overall_accuracy": "overall acc"}
    cases, systems, bars, width = _case_bars(rows)
    names = {(r["dataset"], r["task"]): pick(r) for r in rows}
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cases)) + 2, 4))
    for system in systems:
        xs = [x for x, _ in bars[system]]
        values = [r[pick(r)] or 0.0 for _, r in bars[system]]
        spread = [r.get("spread") if r.get("seeds", 1) > 1 else None for _, r in bars[system]]
        errors = None
        if any(spread):
            low = [v - (s[0] if s else v) for v, s in zip(values, spread, strict=True)]
            high = [(s[1] if s else v) - v for v, s in zip(values, spread, strict=True)]
            errors = [low, high]
        ax.bar(xs, values, width, yerr=errors, capsize=3, label=system)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([f"{d}\n{t} ({short.get(names[(d, t)], names[(d, t)])})" for d, t in cases])
    ax.set_ylim(0, 1)
    ax.set_ylabel("the figure under each case")
    if any(r.get("seeds", 1) > 1 for r in rows):
        ax.set_title("mean over seeds; bars span the lowest to the highest seed", fontsize="small")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))  # off the bars
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_throughput(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Records per second per case and system, on a linear axis (the ratios are what a reader
    compares); every system's bar for a case is measured on that case's records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases, systems, bars, width = _case_bars(rows)
    fig, ax = plt.subplots(figsize=(6, max(3, 0.9 * len(cases) + 1)))
    for system in systems:
        xs = [x for x, _ in bars[system]]
        rates = [r["records"] / max(r["seconds"], 1e-9) for _, r in bars[system]]
        ax.barh(xs, rates, width, label=system)
    ax.set_yticks(range(len(cases)))
    ax.set_yticklabels([f"{d} {t}" for d, t in cases])
    ax.invert_yaxis()
    ax.set_xlabel("records / second on this machine (linear)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check_report_folder(out_dir: Path) -> None:
    """Fail before any system runs when the report could not be written at the end (a file
    where the folder should be, no permission, a read-only mount)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise GiellmError(f"{out_dir}: exists and is not a folder (report -o takes a folder)")
    try:
        probe_folder(out_dir)
    except OSError as err:
        raise GiellmError(f"{out_dir}: cannot write the report here ({err.strerror})") from None


def write_report(
    out_dir: Path, rows: Sequence[dict[str, Any]], *, ours: str, context: dict[str, Any]
) -> Path:
    """report.md + report.json + scores.png + throughput.png in `out_dir`; returns report.md."""
    if not rows:
        raise GiellmError("nothing to report: no system ran on any case")
    out_dir.mkdir(parents=True, exist_ok=True)
    main = [r for r in rows if r.get("group", "main") == "main"]
    ablation = [r for r in rows if r.get("group") == "ablation"]
    plot_scores(main or rows, out_dir / "scores.png")
    plot_throughput(main or rows, out_dir / "throughput.png")
    lines = [
        "# giellm evaluation report",
        "",
        f"Dev splits of the shared datasets, {context.get('limit') or 'all'} records per case; "
        "every system scored by `giellm.evaluation.metrics` (strict spans). Text accuracy ranks "
        "TC and SA, span F1 the rest.",
        "",
        results_table(main),
        "",
        "![scores](scores.png)",
        "",
        "## Where giellm wins and loses",
        "",
        *(comparisons(main, ours) or ["- no other system ran on the same cases."]),
        "",
    ]
    if ablation:
        pooled = pool_seeds(ablation)
        plot_scores(pooled, out_dir / "ablation.png", effect_metric)
        lines += [
            "## Mutual Reinforcement Effect ablation",
            "",
            "Same base, same settings and budget; only the training data differs (see the "
            "ablation config). Figures are means over the seeds.",
            "",
            results_table(pooled),
            "",
            "![ablation](ablation.png)",
            "",
            *ablation_findings(ablation),
            "",
        ]
    lines += [
        "## Throughput",
        "",
        "![throughput](throughput.png)",
        "",
        "## Settings",
        "",
        *(f"- {k}: {v}" for k, v in context.items()),
        "",
    ]
    data = {"context": context, "rows": list(rows)}
    with atomic_writer(out_dir / "report.json") as f:
        f.write(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    report = out_dir / "report.md"
    with atomic_writer(report) as f:
        f.write("\n".join(lines))
    return report
