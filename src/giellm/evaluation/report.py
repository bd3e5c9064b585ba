"""`giellm report`: systems × shared dev splits → one Markdown report with tables, PNG plots and
the JSON behind them.

A system is anything that turns records into predicted records (`System`): a giellm model, GiNZA,
or few-shot prompting of an OpenAI-compatible endpoint. Every system is scored by the same
`giellm.evaluation.metrics.score` on the same gold records, and timed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from giellm.data.jsonl import atomic_writer
from giellm.errors import GiellmError
from giellm.evaluation.metrics import score
from giellm.schema import Example
from giellm.tasks import get_task

if TYPE_CHECKING:
    from giellm.evaluation.baselines.fewshot import Mode

DEFAULT_CASES = [
    ("stockmark", "NER"),
    ("livedoor", "TC"),
    ("jrte", "SA"),
    ("kwdlc", "NER"),
    ("kwdlc", "PAS"),
    ("jacred", "RE"),
    ("fkc", "NER"),
]

Advance = Callable[[], None]


def parse_case(spec: str) -> tuple[str, str]:
    """ "DATASET:TASK" -> (format name, task name), both checked and normalised."""
    from giellm.data.registry import get_format

    dataset, _, task = spec.strip().partition(":")
    if not task:
        raise GiellmError(f"{spec!r} is not DATASET:TASK")
    return get_format(dataset).name, get_task(task).name


class System(Protocol):
    """What the report runs: a name and a predictor for one dataset's records."""

    name: str

    def supports(self, dataset: str, task: str) -> bool: ...

    def predict(
        self, dataset: str, records: Sequence[Example], advance: Advance
    ) -> list[Example]: ...


@dataclass
class GiellmSystem:
    """A giellm model (the embedded default when `model` is None), constrained decoding."""

    name: str
    model: str | Path | None = None
    batch_size: int = 32
    tasks: frozenset[str] | None = None  # tasks it was trained for (read from giellm.json)
    cases: frozenset[tuple[str, str]] | None = None  # only these (dataset, task) pairs
    label_task: str | None = None  # a split-records model: the label comes from this task
    group: str = "main"  # "ablation" rows get their own table
    _extractor: Any = None

    def supports(self, dataset: str, task: str) -> bool:
        if self.cases is not None:
            return (dataset, task) in self.cases
        if self.tasks is None:
            from giellm.models.loading import model_meta

            self.tasks = frozenset(model_meta(self.model).schemas)
        return not self.tasks or task in self.tasks

    def predict(self, dataset: str, records: Sequence[Example], advance: Advance) -> list[Example]:
        if self._extractor is None:
            from giellm.inference.extractor import Extractor

            self._extractor = Extractor(self.model, batch_size=self.batch_size)
        found = self._extractor.predict(records, schema=dataset, on_record=lambda _: advance())
        predicted = [p.example for p in found]
        if self.label_task is None:
            return predicted
        asked = [r.model_copy(update={"task": self.label_task}) for r in records]
        labels = [p.example.label for p in self._extractor.predict(asked, schema=dataset)]
        return [
            p.model_copy(update={"label": label})
            for p, label in zip(predicted, labels, strict=True)
        ]


@dataclass
class GinzaSystem:
    """GiNZA NER with its ENE types mapped onto the dataset's types (NER only)."""

    name: str = "GiNZA"
    _models: dict[str, Any] = field(default_factory=dict)

    def supports(self, dataset: str, task: str) -> bool:
        from giellm.evaluation.baselines.ginza import MAPPINGS

        return task == "NER" and dataset in MAPPINGS

    def predict(self, dataset: str, records: Sequence[Example], advance: Advance) -> list[Example]:
        from giellm.evaluation.baselines.ginza import GinzaNER

        if dataset not in self._models:
            self._models[dataset] = GinzaNER(dataset)
        out = []
        for example in self._models[dataset].predict(records):
            out.append(example)
            advance()
        return out


@dataclass
class FewShotSystem:
    """k-shot prompting of an OpenAI-compatible endpoint, examples from the train split."""

    base_url: str
    model: str
    k: int = 3
    mode: Mode = "chat"
    name: str = "few-shot"
    seed: int = 0

    def supports(self, dataset: str, task: str) -> bool:
        return True

    def predict(self, dataset: str, records: Sequence[Example], advance: Advance) -> list[Example]:
        from giellm.data.registry import get_format, load
        from giellm.evaluation.baselines.fewshot import FewShotClient, pick_shots

        task = records[0].task
        shots = pick_shots(load(dataset, "train", task), self.k, seed=self.seed)
        client = FewShotClient(
            self.base_url,
            self.model,
            shots,
            schema=get_format(dataset).schema(task),
            mode=self.mode,
        )
        return [p.example for p in client.predict(records, on_record=lambda _: advance())]


def spread(records: Sequence[Example], limit: int | None) -> list[Example]:
    """`limit` records evenly spaced over the whole split (dev files are often sorted by
    label, so the first N would be a biased sample); all of them when `limit` is None."""
    if limit is None or limit >= len(records):
        return list(records)
    return [records[i * len(records) // limit] for i in range(limit)]


def main_metric(task: str) -> str:
    """The figure a case is ranked by: text accuracy for label-only tasks, span F1 otherwise."""
    return "text_accuracy" if get_task(task).family == "none" else "f1"


def evaluate_system(
    system: System, dataset: str, gold: Sequence[Example], advance: Advance
) -> dict[str, Any]:
    """Predict `gold` with `system`, score it, and time it."""
    started = time.perf_counter()
    predicted = system.predict(dataset, gold, advance)
    seconds = time.perf_counter() - started
    figures = score(gold, predicted).as_dict()
    return {
        "system": system.name,
        "group": getattr(system, "group", "main"),
        "dataset": dataset,
        "task": gold[0].task,
        **{
            k: v
            for k, v in figures.items()
            if k not in ("per_type", "missing_predictions", "unmatched_predictions")
        },
        "seconds": round(seconds, 3),
        "records_per_second": round(len(gold) / seconds, 3) if seconds > 0 else None,
    }


# --- writing the report -------------------------------------------------------------------------


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
