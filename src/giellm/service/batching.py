"""Fair dynamic batching for the HTTP service: one model worker, many requests.

A request becomes a job of inputs (windows of text, or prompts). Each batch holds at most
`max_batch` inputs of one key; it is led in turn by the oldest job and by the job with the
least left, so a small request is served within a batch or two while a large one runs, and a
large one still gets at least every other batch. Work is bounded: per request
(`max_request`, else `RequestTooLarge`) and queued in all (`max_queued`, else `Busy`). A job
whose client left is cancelled and its inputs not yet generated are dropped.

On shutdown the worker keeps the jobs it has started first, then the others by arrival, while
their estimated time (seconds per input, measured) fits before the deadline; the rest are
refused with `ShuttingDown` (503), as a rule before their work starts (few jobs are ever half
done), so every accepted request is answered within the bound.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


def _left(job: Job) -> int:
    return job.pending


class Refused(Exception):
    """A request the batcher will not take; `status` is the HTTP answer."""

    status = 503

    def __init__(self, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail, self.retry_after = detail, retry_after


class RequestTooLarge(Refused):
    status = 413


class Busy(Refused):
    pass


class ShuttingDown(Refused):
    pass


@dataclass(eq=False)
class Job:
    """One request's inputs and where their results go."""

    key: Hashable
    inputs: list[Any]
    future: asyncio.Future[list[Any]]
    results: list[Any] = field(init=False)  # by input, filled as batches finish
    scheduled: int = 0  # inputs handed to a batch so far (the next one to schedule)
    finished: int = 0

    def __post_init__(self) -> None:
        self.results = [None] * len(self.inputs)

    @property
    def pending(self) -> int:
        return len(self.inputs) - self.scheduled


@dataclass
class BatchStats:
    """What the batcher did (served at /health; tests read it to see batching happen)."""

    requests: int = 0
    inputs: int = 0
    batches: int = 0
    largest_batch: int = 0
    errors: int = 0
    queued_inputs: int = 0  # accepted, not yet generated
    cancelled: int = 0  # clients that left before their answer
    refused: int = 0  # 413/503: too large, queue full, shutting down


@dataclass
class Batcher:
    """Batches concurrent jobs with the same key into calls of `run(key, inputs)`."""

    run: Callable[[Hashable, list[Any]], list[Any]]
    max_batch: int = 64
    max_wait: float = 0.01
    max_request: int = 1024
    max_queued: int = 8192
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self) -> None:
        self._jobs: deque[Job] = deque()  # jobs with inputs not yet scheduled, oldest first
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="giellm-model")
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadline: float | None = None  # loop time by which shutdown must be done
        self._seconds_per_input = 0.0  # measured on the batches run so far
        self._oldest_leads = False  # which job leads the next batch (see `_take`)

    # --- the request side ----------------------------------------------------------------

    def submit(self, key: Hashable, inputs: Sequence[Any]) -> Job:
        """Queue a job (await `job.future` for its results), or refuse it with `Refused`."""
        if self._deadline is not None:
            raise self._refuse(ShuttingDown("the server is shutting down; retry elsewhere"))
        if len(inputs) > self.max_request:
            raise self._refuse(
                RequestTooLarge(
                    f"the request needs {len(inputs):,} model inputs (windows of text or "
                    f"prompts); the limit is {self.max_request:,}: split it"
                )
            )
        if self.stats.queued_inputs + len(inputs) > self.max_queued:
            raise self._refuse(
                Busy(f"{self.stats.queued_inputs:,} inputs are queued; retry later", 1)
            )
        job = Job(key, list(inputs), asyncio.get_running_loop().create_future())
        self.stats.requests += 1
        self.stats.queued_inputs += len(job.inputs)
        self._jobs.append(job)
        self._arrived.set()
        return job

    def cancel(self, job: Job) -> None:
        """The client left: drop the job's inputs not yet generated."""
        if job.future.done():
            return
        job.future.cancel()
        self.stats.cancelled += 1
        self._drop(job)

    def _refuse(self, error: Refused) -> Refused:
        self.stats.refused += 1
        return error

    def _drop(self, job: Job) -> None:
        if job in self._jobs:
            self._jobs.remove(job)
        self.stats.queued_inputs -= job.pending
        job.scheduled = len(job.inputs)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._work())

    def begin_shutdown(self, seconds: float) -> None:
        """From now on take no job, and finish or refuse the queued ones within `seconds`.
        Safe to call from a signal handler."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._set_deadline, seconds)

    def _set_deadline(self, seconds: float) -> None:
        assert self._loop is not None
        if self._deadline is None:
            self._deadline = self._loop.time() + seconds
            self._arrived.set()

    async def stop(self) -> None:
        """Refuse what is still queued, let the running batch end, stop the worker."""
        self._set_deadline(0)
        for job in list(self._jobs):
            self._shed(job)
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=True)

    # --- the worker ----------------------------------------------------------------------

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                self._arrived.clear()
                await self._arrived.wait()
                await self._gather(loop.time() + self.max_wait)
            if self._deadline is not None:
                self._shed_what_will_not_fit(loop.time())
            picks = self._take()
            if picks:
                await self._run_batch(picks)

    async def _gather(self, until: float) -> None:
        """Wait up to `max_wait` after the first arrival for others to batch with."""
        loop = asyncio.get_running_loop()
        while self.stats.queued_inputs < self.max_batch and self._deadline is None:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), until - loop.time())
            except TimeoutError:
                return

    def _take(self) -> list[tuple[Job, int]]:
        """The next batch. It is led in turn by the oldest job and by the one with the least
        left (so a small request waits a batch or two and a large one runs at least every
        other batch), then filled with jobs of the lead's key, least left first (so few jobs
        are ever half done)."""
        if not self._jobs:
            return []
        self._oldest_leads = not self._oldest_leads
        lead = self._jobs[0] if self._oldest_leads else min(self._jobs, key=_left)
        fill = sorted((j for j in self._jobs if j.key == lead.key and j is not lead), key=_left)
        picks: list[tuple[Job, int]] = []
        for job in [lead, *fill]:
            take = min(job.pending, self.max_batch - len(picks))
            picks += [(job, job.scheduled + k) for k in range(take)]
            job.scheduled += take
            if not job.pending:
                self._jobs.remove(job)
            if len(picks) == self.max_batch:
                break
        return picks

    async def _run_batch(self, picks: list[tuple[Job, int]]) -> None:
        loop = asyncio.get_running_loop()
        jobs = list(dict.fromkeys(job for job, _ in picks))
        inputs = [job.inputs[i] for job, i in picks]
        self.stats.queued_inputs -= len(inputs)
        began = loop.time()
        try:
            results = await loop.run_in_executor(self._executor, self.run, jobs[0].key, inputs)
        except Exception as exc:  # one failed batch fails its own requests, not the server
            self.stats.errors += 1
            for job in jobs:
                self._drop(job)
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        spent = (loop.time() - began) / len(inputs)
        self._seconds_per_input = max(spent, 0.8 * self._seconds_per_input + 0.2 * spent)
        self.stats.batches += 1
        self.stats.inputs += len(inputs)
        self.stats.largest_batch = max(self.stats.largest_batch, len(inputs))
        for (job, i), result in zip(picks, results, strict=True):
            job.results[i] = result
            job.finished += 1
            if job.finished == len(job.inputs) and not job.future.done():
                job.future.set_result(job.results)

    def _shed_what_will_not_fit(self, now: float) -> None:
        """Under shutdown, jobs in order (started ones first, then by arrival) keep their
        place while their inputs, after those ahead, fit before the deadline at the measured
        pace; the others are refused."""
        assert self._deadline is not None
        ordered = sorted(self._jobs, key=lambda job: not job.scheduled)  # stable
        self._jobs, ahead = deque(), 0
        for job in ordered:
            if now + (ahead + job.pending) * self._seconds_per_input <= self._deadline:
                self._jobs.append(job)
                ahead += job.pending
            else:
                self._shed(job)

    def _shed(self, job: Job) -> None:
        """Refuse a queued job with 503 (under shutdown)."""
        done = "finish" if job.scheduled else "start"
        self._drop(job)
        if not job.future.done():
            self.stats.refused += 1
            job.future.set_exception(
                ShuttingDown(f"the server is shutting down before this request could {done}")
            )
