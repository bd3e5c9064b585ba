"""Prediction jobs over files: check everything before the model loads, predict in order into
`OUT.partial` (one flushed line per record, under an exclusive lock, the run's settings kept
beside it), resume a killed run where it stopped, and rename to `OUT` only when complete.

    job = PredictJob(Path("in.jsonl"), Path("out.jsonl"), schema="stockmark")
    plan = plan_job(job)                       # reads and checks; no model yet
    result = run_job(job, plan, lambda: Extractor(), settings={"model": None})
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from giellm.data.jsonl import (
    check_outputs,
    check_run_settings,
    check_unique_ids,
    check_writable,
    dumps,
    fingerprint,
    open_locked,
    partial_path,
    read_or_reject,
    read_unique,
    resume_count,
    settings_path,
    write_rejects,
    writes_through,
)
from giellm.data.registry import get_format
from giellm.errors import GiellmError
from giellm.families import project
from giellm.inference.extractor import Extractor, Prediction, Stats, dataset_schema
from giellm.schema import Example
from giellm.tasks import LabelSchema, restrict


@dataclass(frozen=True)
class PredictJob:
    """One file to predict: where from, where to, and how bad lines are handled."""

    input: Path
    output: Path
    from_format: str = "jsonl"
    task: str | None = None  # None: each record's own (unified JSONL)
    schema: str | None = None  # None: the input format's, else the model's label sets
    on_error: str = "fail"  # fail (nothing written) or skip (bad lines go to `rejects`)
    rejects: Path | None = None  # default: OUT.rejects.jsonl
    labels: tuple[str, ...] | None = None  # a subset of the one task's labels (`tasks.restrict`)
    threshold: float | None = None  # items scored below it are left out

    @property
    def rejects_path(self) -> Path:
        return self.rejects or self.output.with_name(self.output.name + ".rejects.jsonl")


@dataclass(frozen=True)
class JobPlan:
    """The checked records of a job and the schema they will be predicted with."""

    records: list[Example]
    schema: str | None
    skipped: list[Any] = field(default_factory=list)  # rejected lines (already written)


@dataclass(frozen=True)
class JobResult:
    predicted: int  # records predicted by this run
    resumed: int  # records found done in the partial file
    seconds: float
    stats: Stats


def plan_job(job: PredictJob) -> JobPlan:
    """Check the outputs, read and check the input, write its rejects: all before any model
    loads, so a mistake costs nothing. Raises `GiellmError` with one line."""
    if job.on_error not in ("fail", "skip"):
        raise GiellmError("--on-error must be fail or skip")
    check_writable(job.output)
    outputs = [job.output, job.rejects_path]
    if not writes_through(job.output):
        outputs.append(partial_path(job.output))
    check_outputs([job.input], outputs)
    if job.schema is not None:
        get_format(job.schema)  # an unknown name fails now, not after the model has loaded
    fmt = get_format(job.from_format)
    if job.task is None and job.from_format != "jsonl":
        raise GiellmError(f"--from {job.from_format} needs --task")
    skipped: list[Any] = []
    if job.task is not None:
        if job.on_error == "skip":
            raise GiellmError(
                "--on-error skip reads unified JSONL only; convert the file first "
                "(giellm convert) or drop --task/--from"
            )
        records = [project(ex, job.task) for ex in fmt.read(job.input, job.task)]
        check_unique_ids(records, job.input)
    elif job.on_error == "skip":
        records, skipped = read_or_reject(job.input)
    else:
        records = read_unique(job.input)
    if skipped:
        write_rejects(job.rejects_path, skipped)
    if not records:
        raise GiellmError(f"{job.input}: no records to predict")
    tasks = sorted({r.task for r in records})
    if job.labels is not None and len(tasks) > 1:
        raise GiellmError(
            f"--labels restricts one task's labels; {job.input} has {', '.join(tasks)}: "
            "give --task, or predict each task's records apart"
        )
    if not job.output.parent.is_dir():
        raise GiellmError(f"{job.output.parent}: output directory does not exist")
    # a dataset's own format implies its label sets
    schema = job.schema if job.schema is not None or not fmt.schemas else fmt.name
    if job.labels is not None and schema is not None:  # known now: check before a model loads
        restrict(dataset_schema(schema, tasks[0]), tasks[0], job.labels)
    return JobPlan(records, schema, skipped)


def _label_schema(job: PredictJob, plan: JobPlan, extractor: Extractor) -> LabelSchema | str | None:
    """The plan's schema, cut to the job's `labels` where it has them."""
    if job.labels is None:
        return plan.schema
    task = plan.records[0].task
    return restrict(extractor.schema(task, plan.schema), task, job.labels)


def run_job(
    job: PredictJob,
    plan: JobPlan,
    load: Callable[[], Extractor],
    *,
    settings: dict[str, Any],
    on_resume: Callable[[int], None] | None = None,
    on_record: Callable[[Prediction], None] | None = None,
    on_windows: Callable[[int, int], None] | None = None,
) -> JobResult:
    """Predict the plan's records into the output, resuming a partial run made with the same
    `settings` (the model and decoding options; the job's own are added). A device, FIFO or
    pipe is written as it is: no partial, nothing renamed over it."""
    if writes_through(job.output):
        with job.output.open("w", encoding="utf-8") as stream:
            extractor = load()
            started = time.perf_counter()
            schema = _label_schema(job, plan, extractor)
            _predict_into(
                stream, extractor, plan.records, schema, on_record, on_windows, job.threshold
            )
        return JobResult(len(plan.records), 0, time.perf_counter() - started, extractor.stats)
    partial = partial_path(job.output)
    settings = {
        "input": str(job.input.resolve()),
        "input_fingerprint": fingerprint(job.input),
        "from": job.from_format,
        "task": job.task,
        "schema": plan.schema,
        "labels": None if job.labels is None else sorted(job.labels),
        "threshold": job.threshold,
        **settings,
    }
    sink = open_locked(partial)
    try:
        check_run_settings(partial, settings)
        done = resume_count(partial, [r.id for r in plan.records])
        if done and on_resume is not None:
            on_resume(done)
        extractor = load()
        started = time.perf_counter()
        schema = _label_schema(job, plan, extractor)
        _predict_into(
            sink, extractor, plan.records[done:], schema, on_record, on_windows, job.threshold
        )
        os.fsync(sink.fileno())
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk fails the close too: keep the first
            sink.close()
        if not partial.stat().st_size:  # nothing predicted: leave no trace
            partial.unlink(missing_ok=True)
            settings_path(partial).unlink(missing_ok=True)
        raise
    sink.close()
    os.replace(partial, job.output)
    settings_path(partial).unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    return JobResult(len(plan.records) - done, done, seconds, extractor.stats)


def _predict_into(
    sink: IO[str],
    extractor: Extractor,
    records: list[Example],
    schema: LabelSchema | str | None,
    on_record: Callable[[Prediction], None] | None,
    on_windows: Callable[[int, int], None] | None,
    threshold: float | None = None,
) -> None:
    def write(prediction: Prediction) -> None:  # one flushed line per record: a kill loses none
        sink.write(dumps(prediction.example) + "\n")
        sink.flush()
        if on_record is not None:
            on_record(prediction)

    # chunks of a few batches: sorted by length for speed, and written out as they finish
    for _ in extractor.predict(
        records,
        schema=schema,
        chunk=8 * extractor.batch_size,
        on_record=write,
        on_windows=on_windows,
        threshold=threshold,
    ):
        pass
