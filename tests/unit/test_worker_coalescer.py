"""``Coalescer``: single calls served in batches (the worker's grouped loads and records)."""

from __future__ import annotations

import asyncio

import pytest

from isthmus.coalescer import Coalescer


class Recorder:
    """A ``serve`` that records each batch it gets; it can be held open, or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate: asyncio.Event | None = None
        self.fail_on: int | None = None

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        if self.gate is not None:
            await asyncio.wait_for(self.gate.wait(), 5)
        if self.fail_on in items:
            raise ValueError(f"cannot serve {self.fail_on}")
        return [item * 10 for item in items]


async def test_calls_made_together_are_served_by_one_batch_in_order() -> None:
    serve = Recorder()
    coalescer = Coalescer(serve)

    results = await asyncio.gather(*(coalescer(n) for n in range(5)))

    assert results == [0, 10, 20, 30, 40]
    assert serve.batches == [[0, 1, 2, 3, 4]]


async def test_calls_made_while_a_batch_is_served_go_together_into_the_next() -> None:
    serve = Recorder()
    serve.gate = asyncio.Event()
    coalescer = Coalescer(serve)

    first = asyncio.ensure_future(coalescer(1))
    for _ in range(20):  # until the first batch is being served
        if serve.batches:
            break
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(coalescer(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert serve.batches == [[1]]  # nothing else is served meanwhile
    serve.gate.set()

    assert await asyncio.wait_for(asyncio.gather(first, *later), 5) == [10, 20, 30, 40]
    assert serve.batches == [[1], [2, 3, 4]]


async def test_batches_hold_at_most_max_batch_items() -> None:
    serve = Recorder()
    coalescer = Coalescer(serve, max_batch=2)

    assert await asyncio.gather(*(coalescer(n) for n in range(5))) == [0, 10, 20, 30, 40]
    assert serve.batches == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError):
        Coalescer(serve, max_batch=0)


async def test_a_failed_batch_fails_each_of_its_calls_and_the_next_batch_is_served() -> None:
    serve = Recorder()
    serve.fail_on = 2
    coalescer = Coalescer(serve)

    outcomes = await asyncio.gather(*(coalescer(n) for n in (1, 2, 3)), return_exceptions=True)

    assert [type(o) for o in outcomes] == [ValueError] * 3
    assert await coalescer(4) == 40


async def test_a_cancelled_caller_does_not_stop_the_others_or_its_item() -> None:
    serve = Recorder()
    serve.gate = asyncio.Event()
    coalescer = Coalescer(serve)

    calls = [asyncio.ensure_future(coalescer(n)) for n in (1, 2)]
    for _ in range(20):
        if serve.batches:
            break
        await asyncio.sleep(0)
    calls[0].cancel()
    serve.gate.set()

    assert await asyncio.wait_for(calls[1], 5) == 20
    assert calls[0].cancelled()
    assert serve.batches == [[1, 2]]  # the cancelled caller's item was served all the same
    await asyncio.wait_for(coalescer.idle(), 5)
