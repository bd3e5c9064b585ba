"""The systems `giellm report` compares and the run over shared dev cases.

A system is anything that turns records into predicted records (`System`): a giellm model, GiNZA,
or few-shot prompting of an OpenAI-compatible endpoint. Every system is scored by the same
`giellm.evaluation.metrics.score` on the same gold records, and timed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from giellm.errors import GiellmError
from giellm.evaluation.metrics import score
from giellm.schema import Example
from giellm.tasks import get_task, label_only

if TYPE_CHECKING:
    from giellm.evaluation.baselines.fewshot import Mode
    from giellm.inference.extractor import Extractor

DEFAULT_CASES = [
    ("stockmark", "NER"),
    ("livedoor", "TC"),
    ("jrte", "SA"),
    ("kwdlc", "NER"),
    ("kwdlc", "PAS"),
    ("jacred", "RE"),
    ("fkc", "NER"),
    ("wac", "NER"),
    ("wac", "PAS"),
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

    def release(self) -> None:
        """Let go of what predicting loaded: the report calls it after a system's last case."""


@dataclass
class GiellmSystem:
    """A giellm model (the shipped default when `model` is None), constrained decoding."""

    name: str
    model: str | Path | None = None
    batch_size: int = 32
    tasks: frozenset[str] | None = None  # tasks it was trained for (read from giellm.json)
    cases: frozenset[tuple[str, str]] | None = None  # only these (dataset, task) pairs
    label_task: str | None = None  # a split-records model: the label comes from this task
    group: str = "main"  # "ablation" rows get their own table
    seed: int | None = None  # an ablation run's seed: the report pools a variant's seeds
    schema: str | None = None  # label sets to ask under; default: the case's dataset
    _extractor: Any = None

    def supports(self, dataset: str, task: str) -> bool:
        if self.cases is not None:
            return (dataset, task) in self.cases
        if self.tasks is None:
            from giellm.models.loading import model_meta

            self.tasks = frozenset(model_meta(self.model).schemas)
        return not self.tasks or task in self.tasks

    def release(self) -> None:
        """Let the loaded model go (it is loaded again if asked for)."""
        import gc

        self._extractor = None
        gc.collect()

    def predict(self, dataset: str, records: Sequence[Example], advance: Advance) -> list[Example]:
        if self._extractor is None:
            from giellm.inference.extractor import Extractor

            self._extractor = Extractor(self.model, batch_size=self.batch_size)
        schema = self.schema or dataset
        if self.label_task is None:
            found = self._extractor.predict(records, schema=schema, on_record=lambda _: advance())
            return [p.example for p in found]
        # a split-records or joint model: the label comes from another task's output, and a
        # label-only case (TC, SA) needs nothing else
        only = all(label_only(r.task) for r in records)
        asked = [
            # a label-only case reads the label windows alone, whatever task asks for it
            r.model_copy(
                update={"task": self.label_task, "text": _first_windows(self._extractor, r)}
            )
            if only
            else r.model_copy(update={"task": self.label_task})
            for r in records
        ]
        tick = (lambda _: advance()) if only else None
        labels = [
            p.example.label for p in self._extractor.predict(asked, schema=schema, on_record=tick)
        ]
        if only:
            found = list(records)  # the gold of a label-only record is its label alone
        else:
            found = [
                p.example
                for p in self._extractor.predict(
                    records, schema=schema, on_record=lambda _: advance()
                )
            ]
        return [
            p.model_copy(update={"label": label, "task": r.task})
            for p, r, label in zip(found, records, labels, strict=True)
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

    def release(self) -> None:
        self._models.clear()


@dataclass
class FewShotSystem:
    """k-shot prompting of an OpenAI-compatible endpoint, examples from the train split."""

    base_url: str
    model: str
    k: int = 3
    mode: Mode = "chat"
    name: str = "few-shot"
    seed: int = 0
    limit: int | None = None  # records per case (spread): long k-shot prompts are slow

    def supports(self, dataset: str, task: str) -> bool:
        return True

    def release(self) -> None:
        pass  # holds nothing between calls: the server holds the model

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
    return "text_accuracy" if label_only(task) else "f1"


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
        "seed": getattr(system, "seed", None),
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


@dataclass(frozen=True)
class FewShotOptions:
    """The few-shot baseline: an OpenAI-compatible endpoint, or (url None) a giellm server of
    `base` (the untuned base: in-context prompting versus fine-tuning, as the paper compares)
    started on loopback for the run; one system per number of shots."""

    url: str | None = None
    model: str = "giellm"
    shots: tuple[int, ...] = (3, 5)
    mode: str = "auto"  # chat, completions, or auto: completions for a local base, else chat
    base: str | None = "gemma-3-270m"
    limit: int | None = 100  # records per case for the few-shot rows


SYSTEM_NAMES = ("giellm", "ginza", "fewshot", "tiny")


def choose_systems(
    chosen: Sequence[str],
    stack: contextlib.ExitStack,
    *,
    model: Path | None = None,
    also: Sequence[tuple[str, Path]] = (),
    trained: Sequence[System] = (),
    fewshot: FewShotOptions = FewShotOptions(),
    local_extractor: Callable[[str | None], Extractor] | None = None,
) -> tuple[list[System], dict[str, Any]]:
    """The systems to run (a local few-shot server stays up until `stack` closes) and what the
    report should say about them."""
    unknown = set(chosen) - set(SYSTEM_NAMES)
    if unknown:
        raise GiellmError(
            f"--systems: unknown {', '.join(sorted(unknown))} ({', '.join(SYSTEM_NAMES)})"
        )
    if fewshot.mode not in ("auto", "chat", "completions"):
        raise GiellmError("--fewshot-mode must be auto, chat or completions")
    runners: list[System] = []
    if "giellm" in chosen:
        runners.append(GiellmSystem(ours_name(model), model))
    runners += [GiellmSystem(name, directory) for name, directory in also]
    if "tiny" in chosen:  # the 5.5M-parameter from-scratch model, the old default
        runners.append(GiellmSystem("tiny (5.5M)", "tiny"))
    runners += trained  # e.g. the ablation's variants (`training.ablation.systems`)
    if "ginza" in chosen:
        runners.append(GinzaSystem())
    context: dict[str, Any] = {}
    if "fewshot" in chosen:
        url = fewshot.url
        if url is None:  # the baseline talks HTTP to a real server, here one of our own
            from giellm.inference.extractor import Extractor
            from giellm.service.app import create_app
            from giellm.service.server import background_server

            load = local_extractor or (lambda base: Extractor(base, batch_size=16))
            url = stack.enter_context(background_server(create_app(load(fewshot.base)))) + "/v1"
        # a pretrained base continues text; chat turns are for instruction-tuned endpoints
        wanted = fewshot.mode
        if wanted == "auto":
            wanted = "completions" if fewshot.url is None else "chat"
        mode: Mode = "chat" if wanted == "chat" else "completions"
        for k in fewshot.shots:
            runners.append(
                FewShotSystem(
                    url, fewshot.model, k=k, mode=mode, name=f"{k}-shot", limit=fewshot.limit
                )
            )
        served = f"a local giellm server on loopback running {fewshot.base or 'the default'}"
        served = served if fewshot.url is None else url
        context["few-shot endpoint"] = f"{served} ({mode}, model {fewshot.model})"
        if fewshot.limit is not None:
            context["few-shot records per case"] = f"{fewshot.limit} (spread over the split)"
    return runners, context


def _first_windows(extractor: Extractor, record: Example) -> str:
    """The text up to the end of the windows the model reads for the record's own task."""
    bounds = extractor.windows_of(record.text, record.task)
    return record.text[: bounds[-1][1]] if bounds else record.text


def ours_name(model: Path | None) -> str:
    """How the compared giellm model is named in the report."""
    return "giellm" if model is None else f"giellm ({model.name})"


def run_cases(
    runners: Sequence[System],
    cases: Sequence[tuple[str, str]],
    limit: int | None,
    track: Callable[[str, int], Advance] | None = None,
) -> list[dict[str, Any]]:
    """Every system on every case it supports (`limit` dev records each, spread over the split);
    `track(description, total)` gives the callback a system calls per record."""
    from giellm.data.registry import load

    # the case after which a system has nothing left to do: its model is let go there, so a
    # report over many models (an ablation's runs) holds one at a time, not all of them
    last = {id(s): i for i, case in enumerate(cases) for s in runners if s.supports(*case)}
    rows = []
    for i, (dataset, task) in enumerate(cases):
        split = spread(load(dataset, "dev", task), limit)
        for system in runners:
            if system.supports(dataset, task):
                gold = spread(split, getattr(system, "limit", None))  # a slow system: fewer
                advance = track(f"{system.name}: {dataset} {task}", len(gold)) if track else None
                rows.append(evaluate_system(system, dataset, gold, advance or (lambda: None)))
                if last[id(system)] == i:
                    system.release()
    return rows
