"""One contract, both budget backends: in-process memory and Redis shared by processes.

Each test makes several budgets of one integration as separate processes would (memory:
over one storage, as a process shares its memory with itself; Redis: separate clients under
a key prefix unique to the test). Then real OS processes share one Redis budget: the window
and the concurrency cap hold across them, a pause one sets stops the other, and a killed
holder's slot comes back when its lease runs out.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from limits.aio.storage import Storage

from isthmus.connectors.ratelimit import Budget, budget_for
from isthmus.errors import BudgetExhausted
from isthmus.ratelimit_storage import close_storage, make_storage

BudgetFactory = Callable[..., Budget]
PROC = Path(__file__).with_name("budget_proc.py")
#: What timing assertions allow for scheduling on a busy machine.
SLACK = 0.15


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def budgets(request: pytest.FixtureRequest) -> AsyncIterator[BudgetFactory]:
    """``budgets(config, integration_id="int_a")``: another budget of that integration."""
    made: list[Storage] = []
    if request.param == "memory":
        shared = make_storage(None)
        made.append(shared)

        def storage() -> Storage:
            return shared
    else:
        url: str = request.getfixturevalue("redis_url")
        prefix = f"isthmus-test:{uuid.uuid4().hex}"

        def storage() -> Storage:
            made.append(make_storage(url, key_prefix=prefix))
            return made[-1]

    def factory(config: dict[str, Any], integration_id: str = "int_a") -> Budget:
        return budget_for(integration_id, config, storage())

    yield factory

    if made:
        await made[0].reset()
    for s in made:
        await close_storage(s)


async def _starts(budgets: list[Budget], n: int) -> list[float]:
    """Seconds from the first call at which each of ``n`` calls in a row got its slot,
    taking turns among ``budgets``."""
    began = time.monotonic()
    got = []
    for i in range(n):
        async with budgets[i % len(budgets)].slot():
            got.append(time.monotonic() - began)
    return got


async def test_the_window_holds_across_budgets(budgets: BudgetFactory) -> None:
    config = {"requestsPerWindow": 3, "windowSeconds": 0.3}
    starts = await _starts([budgets(config), budgets(config)], 6)
    assert starts[2] < SLACK
    assert 0.3 - 0.01 <= starts[3] < 0.3 + SLACK
    assert starts[5] < 0.3 + SLACK


async def test_the_concurrency_cap_holds_across_budgets(budgets: BudgetFactory) -> None:
    config = {"maxConcurrency": 2}
    shared = [budgets(config), budgets(config)]
    inside = most = 0

    async def call(budget: Budget) -> None:
        nonlocal inside, most
        async with budget.slot():
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.05)
            inside -= 1

    began = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(call(shared[i % 2]) for i in range(6))), 5)
    assert most == 2
    assert 0.15 <= time.monotonic() - began < 0.15 + 4 * SLACK


async def test_a_slot_comes_back_when_its_call_fails(budgets: BudgetFactory) -> None:
    config = {"maxConcurrency": 1, "maxWaitSeconds": 0.3}
    with pytest.raises(ValueError):
        async with budgets(config).slot():
            raise ValueError("upstream broke")
    assert (await _starts([budgets(config)], 1))[0] < SLACK


async def test_retry_after_pauses_every_budget_of_the_integration(
    budgets: BudgetFactory,
) -> None:
    config = {"maxWaitSeconds": 0.5}
    await budgets(config).observe(429, {"Retry-After": "30"})
    began = time.monotonic()
    with pytest.raises(BudgetExhausted) as caught:
        async with budgets(config).slot():
            pass
    assert time.monotonic() - began < SLACK  # a wait past the maximum is refused at once
    assert 29 <= caught.value.retry_after <= 30
    # Another integration is not paused.
    assert (await _starts([budgets(config, "int_b")], 1))[0] < SLACK


async def test_an_exhausted_allowance_pauses_until_its_reset(budgets: BudgetFactory) -> None:
    await budgets({}).observe(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0.3"})
    starts = await _starts([budgets({})], 2)
    assert 0.3 - 0.05 <= starts[0] < 0.3 + SLACK  # the pause began before the timer did
    assert starts[1] - starts[0] < SLACK


async def test_a_low_allowance_spaces_the_calls(budgets: BudgetFactory) -> None:
    headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "0.3"}
    await budgets({}).observe(200, headers)
    starts = await _starts([budgets({}), budgets({})], 3)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(0.1 - 0.01 <= gap < 0.1 + SLACK for gap in gaps), gaps


async def test_plenty_left_ends_the_spacing(budgets: BudgetFactory) -> None:
    low = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "20"}
    await budgets({}).observe(200, low)
    assert (await _starts([budgets({})], 1))[0] < SLACK  # the first of the two goes at once
    with pytest.raises(BudgetExhausted):  # the next one is 10 s away
        async with budgets({"maxWaitSeconds": 0.2}).slot():
            pass
    plenty = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "99", "X-RateLimit-Reset": "20"}
    await budgets({}).observe(200, plenty)
    assert (await _starts([budgets({}), budgets({})], 4))[-1] < SLACK


async def test_a_full_window_past_the_maximum_wait_is_refused(budgets: BudgetFactory) -> None:
    config = {"requestsPerWindow": 1, "windowSeconds": 60, "maxWaitSeconds": 1}
    await _starts([budgets(config)], 1)
    with pytest.raises(BudgetExhausted) as caught:
        async with budgets(config).slot():
            pass
    assert 59 <= caught.value.retry_after <= 60


@pytest.mark.redis
async def test_an_unreachable_redis_lets_calls_through() -> None:
    storage = make_storage("redis://127.0.0.1:1/0", key_prefix=f"isthmus-test:{uuid.uuid4().hex}")
    try:
        budget = budget_for("int_a", {"requestsPerWindow": 1, "maxConcurrency": 1}, storage)
        await budget.observe(429, {"Retry-After": "30"})
        assert len(await _starts([budget], 3)) == 3
    finally:
        await close_storage(storage)


# -- real processes sharing one Redis budget --------------------------------------------------


class Procs:
    """Budget processes started by a test, killed at its end whatever happens."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"isthmus-test:{uuid.uuid4().hex}"
        self.started: list[subprocess.Popen[str]] = []

    def start(self, mode: str, config: dict[str, Any], arg: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        args = [self.url, self.prefix, "int_shared", mode, json.dumps(config), arg]
        proc = subprocess.Popen(
            [sys.executable, str(PROC), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.started.append(proc)
        return proc

    def budget(self, storage: Storage, config: dict[str, Any]) -> Budget:
        return budget_for("int_shared", config, storage)


@pytest.fixture
def procs(redis_url: str) -> Iterator[Procs]:
    made = Procs(redis_url)
    try:
        yield made
    finally:
        for proc in made.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
async def shared_storage(procs: Procs) -> AsyncIterator[Storage]:
    storage = make_storage(procs.url, key_prefix=procs.prefix)
    try:
        yield storage
    finally:
        await storage.reset()
        await close_storage(storage)


async def _line(stream: IO[str] | None, timeout: float = 20.0) -> str:
    assert stream is not None
    line = await asyncio.wait_for(asyncio.to_thread(stream.readline), timeout)
    assert line, "the budget process ended early"
    return line.strip()


def _most_at_once(spans: list[list[float]]) -> int:
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    inside = most = 0
    for _, step in edges:  # at a tie, -1 sorts first: a slot given back, then taken
        inside += step
        most = max(most, inside)
    return most


@pytest.mark.redis
async def test_two_processes_never_exceed_one_budget(procs: Procs, shared_storage: Storage) -> None:
    config = {"requestsPerWindow": 5, "windowSeconds": 1, "maxConcurrency": 2}
    workers = [procs.start("hammer", config, "1.5") for _ in range(2)]
    for proc in workers:
        assert await _line(proc.stdout) == "ready"
    for proc in workers:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [json.loads(await _line(proc.stdout, timeout=30)) for proc in workers]

    assert all(results), "each process made calls"
    spans = sorted(span for result in results for span in result)
    starts = [entered for entered, _ in spans]
    # 1.5 s of trying at 5 per second: the windows at 0 and 1 s were spent (callers still
    # waiting when the time ran out go later), and never overspent:
    assert len(starts) >= 10
    # No second (less the time a slot takes to be reported) saw more than 5 starts.
    for i, start in enumerate(starts):
        assert sum(1 for s in starts[i:] if s < start + 1 - 0.05) <= 5
    assert _most_at_once(spans) == 2


@pytest.mark.redis
async def test_a_pause_set_by_one_process_stops_the_other(
    procs: Procs, shared_storage: Storage
) -> None:
    proc = procs.start("pause", {}, "1")
    before = float(await _line(proc.stdout))
    assert await _line(proc.stdout) == "paused"
    async with procs.budget(shared_storage, {}).slot():
        got = time.time()
    assert before + 1 - 0.01 <= got < before + 3


@pytest.mark.redis
async def test_a_killed_holders_slot_comes_back_after_its_lease(
    procs: Procs, shared_storage: Storage
) -> None:
    lease = 0.6
    proc = procs.start("hold", {"maxConcurrency": 1}, str(lease))
    assert await _line(proc.stdout) == "holding"
    # Alive, it keeps renewing: the slot stays taken past its first lease.
    with pytest.raises(BudgetExhausted):
        async with procs.budget(shared_storage, {"maxConcurrency": 1, "maxWaitSeconds": 1}).slot():
            pass

    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    began = time.monotonic()
    async with procs.budget(shared_storage, {"maxConcurrency": 1, "maxWaitSeconds": 5}).slot():
        waited = time.monotonic() - began
    assert waited < lease + 0.4  # not the 5 s it would wait for a slot that never came back
