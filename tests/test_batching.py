"""The fair batcher on its own (no HTTP): which inputs each batch takes, the bounds, and what a
cancelled job leaves. `run` is a plain function that records the batches it is given."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

import pytest

from giellm.service.batching import Batcher, Busy, RequestTooLarge


def _recording() -> tuple[list[list[Any]], Any]:
    batches: list[list[Any]] = []

    def run(key: Hashable, inputs: list[Any]) -> list[Any]:
        batches.append(list(inputs))
        return [f"{key}:{x}" for x in inputs]

    return batches, run


def test_a_small_job_is_served_in_the_next_batch_and_the_large_one_keeps_going() -> None:
    batches, run = _recording()

    async def main() -> tuple[list[Any], list[Any]]:
        batcher = Batcher(run, max_batch=4, max_wait=0)
        large = batcher.submit("NER", [f"L{i}" for i in range(12)])
        small = batcher.submit("SA", ["S0"])  # another kind: it cannot share the large's batch
        batcher.start()
        results = await asyncio.gather(large.future, small.future)
        await batcher.stop()
        return results[0], results[1]

    large, small = asyncio.run(main())
    assert large == [f"NER:L{i}" for i in range(12)] and small == ["SA:S0"]
    # led by the oldest, then by the one with least left, then the oldest again …
    assert batches == [
        ["L0", "L1", "L2", "L3"],
        ["S0"],
        ["L4", "L5", "L6", "L7"],
        ["L8", "L9", "L10", "L11"],
    ]


def test_jobs_of_one_kind_share_a_batch_least_left_first() -> None:
    batches, run = _recording()

    async def main() -> None:
        batcher = Batcher(run, max_batch=4, max_wait=0)
        jobs = [batcher.submit("NER", [f"A{i}" for i in range(6)])]
        jobs += [batcher.submit("NER", ["B0"]), batcher.submit("NER", ["C0", "C1"])]
        batcher.start()
        await asyncio.gather(*(j.future for j in jobs))
        await batcher.stop()

    asyncio.run(main())
    # the oldest leads; then B (least left) leads, filled least left first, ties to the older
    assert batches == [["A0", "A1", "A2", "A3"], ["B0", "A4", "A5", "C0"], ["C1"]]


def test_bounds_and_cancelling() -> None:
    batches, run = _recording()

    async def main() -> tuple[int, int]:
        batcher = Batcher(run, max_batch=2, max_wait=0, max_request=5, max_queued=6)
        with pytest.raises(RequestTooLarge, match=r"6 model inputs.*limit is 5"):
            batcher.submit("NER", list(range(6)))
        kept = batcher.submit("NER", list(range(5)))
        with pytest.raises(Busy) as busy:
            batcher.submit("NER", [0, 1])
        assert busy.value.retry_after == 1 and busy.value.status == 503
        gone = batcher.submit("SA", ["x"])
        batcher.cancel(gone)  # before any batch ran: none of its inputs is generated
        batcher.start()
        await kept.future
        await batcher.stop()
        return batcher.stats.cancelled, batcher.stats.refused

    assert asyncio.run(main()) == (1, 2)
    assert [x for b in batches for x in b] == [0, 1, 2, 3, 4]  # "x" never ran
