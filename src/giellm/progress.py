"""Progress displays on stderr: records/s for streams, loss, tokens/s and ETA for training.

On a terminal they are live rich bars; elsewhere (CI logs, `nohup`) training prints a plain line
every 5% so a long run still shows where it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

err_console = Console(stderr=True, soft_wrap=True)  # messages stay one line in logs


class _Rate(ProgressColumn):
    """Records per second."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.1f} rec/s")


def record_progress(*, transient: bool = True) -> Progress:
    """A bar for records: count (of the total when known), rate, elapsed and ETA."""
    return Progress(
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
