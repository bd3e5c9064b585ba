"""Progress displays on stderr: records/s for streams, loss, tokens/s and ETA for training.

On a terminal they are live rich bars; elsewhere (CI logs, `nohup`, a pipe) a plain line every
5% (or every 30 s when the total is unknown) so a long run still shows where it is.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

err_console = Console(stderr=True, soft_wrap=True)  # messages stay one line in logs
logger = logging.getLogger("giellm")  # a library's logger: silent until an app configures it
logger.addHandler(logging.NullHandler())


class _ConsoleHandler(logging.Handler):
    """giellm's messages on stderr as the CLI prints them: one plain line; warnings prefixed
    (and shown even when --quiet silences the console)."""

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.WARNING:
            print(f"{record.levelname.lower()}: {message}", file=sys.stderr)
        else:
            err_console.print(message, highlight=False)


def configure_logging(verbosity: int) -> None:
    """The CLI's output: -1 (--quiet) warnings and errors only, no progress; 0 messages and
    progress; 1 (--verbose) also giellm's debug messages (what loads, from where, how)."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logger.setLevel(level)
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())
    logger.propagate = False
    err_console.quiet = verbosity < 0  # progress bars and plain progress lines too


class _Rate(ProgressColumn):
    """Records per second."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.1f} rec/s")


class PlainLines(Progress):
    """A progress that draws nothing and prints one plain line per task every 5% (or 30 s
    with no total): count, rate and ETA, for logs where a live bar would be noise or nothing."""

    def __init__(self, *columns: Any, **kw: Any) -> None:
        super().__init__(*columns, **kw)
        self._shown: dict[TaskID, tuple[int, float]] = {}

    def update(self, task_id: TaskID, **kw: Any) -> None:
        super().update(task_id, **kw)
        self._report(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._report(task_id)

    def _report(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        now = time.monotonic()
        total = task.total or 0
        step = int(task.completed * 20 // total) if total else 0
        last_step, last_time = self._shown.get(task_id, (0, now))
        done = bool(total) and task.completed >= total
        due = step > last_step if total else now - last_time >= 30
        if not (due or done) or (done and last_step >= 20):
            return
        self._shown[task_id] = (20 if done else step, now)
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        line = f"{task.description.strip()}: {task.completed:,.0f}"
        if total:
            eta = (total - task.completed) / rate if rate > 0 else 0.0
            line += f"/{total:,.0f} ({task.completed / total:.0%}) {rate:,.1f}/s ETA {eta:,.0f} s"
        else:
            line += f" {rate:,.1f}/s"
        err_console.print(line, highlight=False)


def record_progress(*, transient: bool = True) -> Progress:
    """A bar for records: count (of the total when known), rate, elapsed and ETA; plain lines
    when stderr is not a terminal."""
    kind = Progress if err_console.is_terminal else PlainLines
    return kind(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=not err_console.is_terminal,
    )


class TrainingBar:
    """Steps with the running loss and tokens/s; `update` is called once per optimizer step."""

    def __init__(self, progress: Progress | None, stage: str, total: int) -> None:
        self.progress, self.stage, self.total = progress, stage, total
        self.task = progress.add_task(stage, total=total, loss="-", rate=0.0) if progress else None
        self.every = max(1, total // 20)

    def update(self, *, step: int, loss: float, rate: float) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=step, loss=f"{loss:.3f}", rate=rate)
        elif step % self.every == 0 or step == self.total:
            err_console.print(
                f"{self.stage}: step {step}/{self.total} loss {loss:.3f} {rate:,.0f} tok/s",
                highlight=False,
            )


@contextmanager
def training_progress(stage: str, total: int, *, enabled: bool = True) -> Iterator[TrainingBar]:
    if not enabled:
        yield TrainingBar(None, stage, 1 << 62)
        return
    if not err_console.is_terminal:
        yield TrainingBar(None, stage, total)
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]:,.0f} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    )
    with progress:
        yield TrainingBar(progress, stage, total)
