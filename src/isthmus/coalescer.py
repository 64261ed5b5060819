"""Serving single calls in batches (see :class:`Coalescer`): the worker completes jobs this
way, and the delivery handler loads and records deliveries."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Serves single calls in batches: the calls made in one turn of the event loop, and
    those made while a batch is being served, go together into the next batch (at most
    ``max_batch`` items). The handlers of jobs claimed together start in the same turn, so
    what each asks for one at a time is served by one statement, and under load the batches
    grow while the store is busy.

    ``serve`` gets the items and returns one result per item, in order; if it raises, every
    call of that batch raises it. A caller cancelled while waiting does not stop its item
    from being served.
    """

    def __init__(
        self, serve: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_batch: int = 500
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be positive")
        self._serve = serve
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        return await self.submit(item)

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue ``item`` for the next batch; its result comes in the future returned."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return future

    async def idle(self) -> None:
        """Until every batch under way has been served."""
        while self._runner is not None and not self._runner.done():
            await asyncio.wait([self._runner])

    async def _run(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let the calls of this same turn join
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await self._serve([item for item, _f in batch])
                if len(results) != len(batch):
                    raise RuntimeError("a batch was served with the wrong number of results")
                for (_item, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
            except Exception as exc:
                for _item, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                        # Its caller, if still waiting, gets it all the same; one that was
                        # cancelled meanwhile must not have it reported as never retrieved.
                        future.exception()
            finally:
                for _item, future in batch:
                    if not future.done():  # the runner itself was cancelled
                        future.cancel()
