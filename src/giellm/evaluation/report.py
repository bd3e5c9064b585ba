"""`giellm report`: the rows of systems × shared dev splits (`giellm.evaluation.systems`) as one
Markdown report with tables, PNG plots and the JSON behind them."""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def ablation_findings(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per case, the ablation variants ranked by the case's main figure, in one sentence."""
    out = []
    for dataset, task in dict.fromkeys((r["dataset"], r["task"]) for r in rows):
        metric = main_metric(task)
        here = [r for r in rows if (r["dataset"], r["task"]) == (dataset, task)]
        if len(here) < 2:
            continue
        ranked = sorted(here, key=lambda r: -(r[metric] or 0.0))
        order = " > ".join(f"{r['system']} {r[metric] or 0.0:.3f}" for r in ranked)
        overall = ", ".join(f"{r['system']} {_fmt(r['overall_accuracy'])}" for r in ranked)
        name = metric.replace("_", " ")
        out.append(f"- {dataset} {task} ({name}): {order}; overall accuracy: {overall}.")
    return out


def plot_scores(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Grouped bars: each case's main metric per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys((r["dataset"], r["task"]) for r in rows))
    systems = list(dict.fromkeys(r["system"] for r in rows))
    width = 0.8 / max(len(systems), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cases)), 4))
    for i, system in enumerate(systems):
        values = []
        for case in cases:
            match = [r for r in rows if (r["dataset"], r["task"]) == case and r["system"] == system]
            metric = main_metric(case[1])
            values.append((match[0][metric] or 0.0) if match else 0.0)
        ax.bar([c + i * width for c in range(len(cases))], values, width, label=system)
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(cases))])
    ax.set_xticklabels(
        [f"{d}\n{t} ({'acc' if main_metric(t) != 'f1' else 'F1'})" for d, t in cases]
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("text accuracy (TC, SA) or span F1")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_throughput(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Records per second per system, summed over every case it ran (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(dict.fromkeys(r["system"] for r in rows))
    rates = []
    for s in systems:
        mine = [r for r in rows if r["system"] == s]
        rates.append(sum(r["records"] for r in mine) / max(sum(r["seconds"] for r in mine), 1e-9))
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(systems, rates)
    ax.set_xscale("log")
    ax.set_xlabel("records / second on this machine")
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
        plot_scores(ablation, out_dir / "ablation.png")
        lines += [
            "## Mutual Reinforcement Effect ablation",
            "",
            "Same pretrained base, same steps and batch size; only the training data differs "
            "(see `configs/ablation.yaml`).",
            "",
            results_table(ablation),
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
