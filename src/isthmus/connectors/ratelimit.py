"""Rate-limit budgets of integrations: the :class:`~isthmus.connectors.types.RateLimiter` the
API client holds each call to.

A :class:`Budget` lets a call out when four things allow it, checked and taken in one step:

- no pause is in force (a 429/503 ``Retry-After``, or a provider saying nothing is left);
- fewer than ``max_concurrency`` calls of the integration are in flight;
- fewer than ``requests`` calls started in the last ``window_seconds`` (a moving window);
- the provider's pace, when its headers say the allowance runs low (see
  :mod:`isthmus.connectors.pacing`), spaces this call far enough from the last one.

Otherwise ``slot()`` waits, up to ``max_wait`` seconds, then raises ``BudgetExhausted``.

The state lives in the hub's rate-limit storage (``isthmus.ratelimit_storage``): in this
process's memory, or in Redis, shared by every process. In Redis one Lua script decides and
takes atomically, on the server's clock so hosts need not agree on the time, and each call in
flight holds a lease renewed while it runs: a killed process's slots come back when their
leases run out. The ``limits`` strategies are not used for the window: taking a window entry
and a concurrency slot must be one atomic step (or a caller waiting for one would spend the
other), and they read the wall clock, which tests replace. A failing Redis lets calls through
(logged): a budget is no reason to stop working, and the provider's 429s still slow us down.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from weakref import WeakKeyDictionary

from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.storage.redis.coredis import CoredisBridge

from isthmus.connectors import pacing
from isthmus.errors import BudgetExhausted, ConfigError, FieldError, InvalidInput

log = logging.getLogger("isthmus.connectors.ratelimit")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Longest ``slot()`` waits by default before giving up.
DEFAULT_MAX_WAIT = 30.0
#: A call in flight holds its Redis lease this long unless renewed (every third of it).
LEASE_SECONDS = 15.0
#: How often a caller waiting for a concurrency slot looks again.
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class BudgetRules:
    """An integration's proactive budget; ``None`` leaves that dimension unlimited."""

    requests: int | None = None
    window_seconds: float = 1.0
    max_concurrency: int | None = None
    max_wait: float = DEFAULT_MAX_WAIT

    def describe(self) -> str:
        parts = []
        if self.requests:
            parts.append(f"{self.requests} calls per {self.window_seconds:g} s")
        if self.max_concurrency:
            parts.append(f"{self.max_concurrency} at a time")
        return ", ".join(parts) or "no fixed budget"


class BudgetState(Protocol):
    """Where a budget's counters live. ``now`` is the caller's clock; a shared state may
    use its own (Redis: the server's) so that every process reads the same time."""

    async def take(self, token: str, rules: BudgetRules, now: float) -> float:
        """Take a slot for ``token`` and answer 0, or take nothing and answer how many
        seconds to wait before asking again."""
        ...

    def hold(self, token: str) -> AbstractAsyncContextManager[None]:
        """Keep the slot of ``token`` for the duration of the block (renewing its lease)."""
        ...

    async def release(self, token: str) -> None: ...

    async def pause(self, seconds: float, now: float) -> None:
        """Nobody starts a call for ``seconds`` (a longer pause already set stays)."""
        ...

    async def pace(self, spacing: float, lasts: float, now: float) -> None:
        """Calls start at least ``spacing`` seconds apart for the next ``lasts`` seconds."""
        ...

    async def unpace(self) -> None: ...


class Budget:
    """One integration's budget (see the module docstring). ``clock`` (epoch seconds) and
    ``sleep`` are injectable so tests need no real waiting."""

    def __init__(
        self,
        integration_id: str,
        rules: BudgetRules,
        state: BudgetState,
        *,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        low_fraction: float = pacing.LOW_FRACTION,
    ) -> None:
        self.integration_id = integration_id
        self.rules = rules
        self.state = state
        self.clock = clock
        self.sleep = sleep
        self.low_fraction = low_fraction

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        token = uuid.uuid4().hex
        deadline = self.clock() + self.rules.max_wait
        while (wait := await self.state.take(token, self.rules, self.clock())) > 0:
            left = deadline - self.clock()
            if wait > left:
                raise BudgetExhausted(
                    f"integration {self.integration_id}: no call may go out within "
                    f"{self.rules.max_wait:g} s ({self.rules.describe()}; next chance in "
                    f"{wait:.1f} s)",
                    retry_after=math.ceil(wait),
                )
            await self.sleep(wait)
        try:
            async with self.state.hold(token):
                yield
        finally:
            # Even when the call is cancelled: a slot kept here would be lost until its lease.
            await asyncio.shield(self.state.release(token))

    async def observe(self, status: int, headers: Mapping[str, str]) -> None:
        now = self.clock()
        reaction = pacing.react(
            status, headers, datetime.fromtimestamp(now, UTC), low_fraction=self.low_fraction
        )
        if reaction.pause > 0:
            await self.state.pause(reaction.pause, now)
        if reaction.spacing > 0:
            await self.state.pace(reaction.spacing, reaction.lasts, now)
        elif reaction.informed:
            await self.state.unpace()


# -- in this process ------------------------------------------------------------------------


class MemoryState:
    """One process's budget state for one integration, on the callers' clock."""

    def __init__(self) -> None:
        self.starts: deque[float] = deque()  # when the calls of the window started
        self.held: set[str] = set()
        self.paused_until = 0.0
        self.spacing = 0.0
        self.pace_until = 0.0
        self.next_start = 0.0

    async def take(self, token: str, rules: BudgetRules, now: float) -> float:
        if self.paused_until > now:
            return self.paused_until - now
        if rules.max_concurrency and len(self.held) >= rules.max_concurrency:
            return POLL_SECONDS
        if rules.requests:
            while self.starts and self.starts[0] <= now - rules.window_seconds:
                self.starts.popleft()
            if len(self.starts) >= rules.requests:
                return self.starts[0] + rules.window_seconds - now
        if self.spacing > 0 and self.pace_until > now:
            if self.next_start > now:
                return self.next_start - now
            self.next_start = now + self.spacing
        if rules.max_concurrency:
            self.held.add(token)
        if rules.requests:
            self.starts.append(now)
        return 0.0

    @asynccontextmanager
    async def hold(self, token: str) -> AsyncIterator[None]:
        yield  # the process is the lease: its memory goes with it

    async def release(self, token: str) -> None:
        self.held.discard(token)

    async def pause(self, seconds: float, now: float) -> None:
        self.paused_until = max(self.paused_until, now + seconds)

    async def pace(self, spacing: float, lasts: float, now: float) -> None:
        self.spacing, self.pace_until = spacing, now + lasts

    async def unpace(self) -> None:
        self.spacing = self.pace_until = 0.0


# One state per integration per memory storage: every budget a process builds from the hub's
# storage shares it, and a storage's states go with the storage.
_memory: WeakKeyDictionary[Storage, dict[str, MemoryState]] = WeakKeyDictionary()


def memory_state(storage: Storage, integration_id: str) -> MemoryState:
    return _memory.setdefault(storage, {}).setdefault(integration_id, MemoryState())


# -- in Redis, shared by processes ------------------------------------------------------------

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 "
_F = "local function f(x) return string.format('%.6f', x) end "

# KEYS: pause, window, leases, pace. ARGV: token, requests (0: none), window seconds,
# max concurrency (0: none), lease seconds, poll seconds. Answers the wait, as a string
# (a Lua number would come back truncated to an integer).
_TAKE = (
    _NOW
    + _F
    + """
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if paused > now then return f(paused - now) end
local cap = tonumber(ARGV[4])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', f(now))
  if redis.call('ZCARD', KEYS[3]) >= cap then
    local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return f(math.min(tonumber(first[2]) - now, tonumber(ARGV[6])))
  end
end
local requests = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
if requests > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', f(now - window))
  if redis.call('ZCARD', KEYS[2]) >= requests then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return f(tonumber(first[2]) + window - now)
  end
end
local pace = redis.call('HMGET', KEYS[4], 'spacing', 'until', 'next')
local spacing = tonumber(pace[1] or '0')
if spacing > 0 and tonumber(pace[2] or '0') > now then
  local nxt = tonumber(pace[3] or '0')
  if nxt > now then return f(nxt - now) end
  redis.call('HSET', KEYS[4], 'next', f(now + spacing))
end
if cap > 0 then
  redis.call('ZADD', KEYS[3], f(now + tonumber(ARGV[5])), ARGV[1])
  redis.call('PEXPIRE', KEYS[3], math.ceil(tonumber(ARGV[5]) * 1000) + 1000)
end
if requests > 0 then
  redis.call('ZADD', KEYS[2], f(now), ARGV[1])
  redis.call('PEXPIRE', KEYS[2], math.ceil(window * 1000) + 1000)
end
return '0'
"""
)

# KEYS: leases. ARGV: token, lease seconds. Only a lease still held is extended: one that ran
# out may have been given to another caller already.
_RENEW = (
    _NOW
    + _F
    + """
local n = redis.call('ZADD', KEYS[1], 'XX', 'CH', f(now + tonumber(ARGV[2])), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
return n
"""
)

# KEYS: pause. ARGV: seconds.
_PAUSE = (
    _NOW
    + _F
    + """
local till = now + tonumber(ARGV[1])
if till > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], f(till), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return 1
"""
)

# KEYS: pace. ARGV: spacing, lasts.
_PACE = (
    _NOW
    + _F
    + """
redis.call('HSET', KEYS[1], 'spacing', ARGV[1], 'until', f(now + tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
return 1
"""
)


class RedisState:
    """One integration's budget state in Redis, under the storage's key prefix."""

    def __init__(
        self, storage: RedisStorage, integration_id: str, *, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        bridge = storage.bridge
        if not isinstance(bridge, CoredisBridge):  # what ratelimit_storage builds
            raise ConfigError("rate-limit budgets need the coredis Redis client")
        self.client: Any = bridge.get_connection()
        # The braces keep one integration's keys on one node of a Redis cluster.
        base = f"{bridge.key_prefix}:budget:{{{integration_id}}}"
        self.keys = {part: f"{base}:{part}" for part in ("pause", "window", "leases", "pace")}
        self.lease_seconds = lease_seconds
        self.errors: tuple[type[BaseException], ...] = (
            *_as_tuple(bridge.base_exceptions),
            OSError,
            TimeoutError,
        )
        self._scripts: dict[str, Any] = {}

    async def _run(self, source: str, keys: list[str], args: list[str]) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return await script.execute(keys=keys, args=args)

    async def take(self, token: str, rules: BudgetRules, now: float) -> float:
        k = self.keys
        args = [
            token,
            str(rules.requests or 0),
            repr(float(rules.window_seconds)),
            str(rules.max_concurrency or 0),
            repr(self.lease_seconds),
            repr(POLL_SECONDS),
        ]
        try:
            answer = await self._run(_TAKE, [k["pause"], k["window"], k["leases"], k["pace"]], args)
        except self.errors as exc:
            log.warning("rate-limit storage failed; letting the call through: %s", exc)
            return 0.0
        return float(answer)

    @asynccontextmanager
    async def hold(self, token: str) -> AsyncIterator[None]:
        renewer = asyncio.create_task(self._renew(token))
        try:
            yield
        finally:
            renewer.cancel()
            with suppress(asyncio.CancelledError):
                await renewer

    async def _renew(self, token: str) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self._run(_RENEW, [self.keys["leases"]], [token, repr(self.lease_seconds)])
            except self.errors as exc:
                log.warning("could not renew a rate-limit lease: %s", exc)

    async def release(self, token: str) -> None:
        try:
            await self.client.zrem(self.keys["leases"], [token])
        except self.errors as exc:
            log.warning("could not release a rate-limit lease (it runs out by itself): %s", exc)

    async def pause(self, seconds: float, now: float) -> None:
        await self._quietly(_PAUSE, "pause", [repr(seconds)])

    async def pace(self, spacing: float, lasts: float, now: float) -> None:
        await self._quietly(_PACE, "pace", [repr(spacing), repr(lasts)])

    async def unpace(self) -> None:
        try:
            await self.client.delete([self.keys["pace"]])
        except self.errors as exc:
            log.warning("rate-limit storage failed: %s", exc)

    async def _quietly(self, source: str, key: str, args: list[str]) -> None:
        try:
            await self._run(source, [self.keys[key]], args)
        except self.errors as exc:
            log.warning("rate-limit storage failed: %s", exc)


def _as_tuple(
    value: type[BaseException] | tuple[type[BaseException], ...],
) -> tuple[type[BaseException], ...]:
    return value if isinstance(value, tuple) else (value,)


# -- from an integration's config ------------------------------------------------------------

#: The config block's keys (camelCase like the rest of the API).
CONFIG_KEYS = ("requestsPerWindow", "windowSeconds", "maxConcurrency", "maxWaitSeconds")


def rules_from_config(config: Mapping[str, Any] | None, *, field: str = "rateLimit") -> BudgetRules:
    """Read a block like ``{"requestsPerWindow": 100, "windowSeconds": 10,
    "maxConcurrency": 4, "maxWaitSeconds": 30}``; every key is optional (``windowSeconds``
    defaults to 1). Bad values are ``InvalidInput`` naming ``<field>.<key>``."""
    config = config or {}
    errors: list[FieldError] = []
    for key in config:
        if key not in CONFIG_KEYS:
            errors.append(FieldError(f"{field}.{key}", "is not a rate-limit setting"))

    def number(key: str, *, integer: bool) -> float | None:
        value = config.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            errors.append(FieldError(f"{field}.{key}", "must be a number above 0"))
            return None
        if integer and value != int(value):
            errors.append(FieldError(f"{field}.{key}", "must be a whole number"))
            return None
        return value

    requests = number("requestsPerWindow", integer=True)
    window = number("windowSeconds", integer=False)
    concurrency = number("maxConcurrency", integer=True)
    max_wait = number("maxWaitSeconds", integer=False)
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors)
    return BudgetRules(
        requests=int(requests) if requests else None,
        window_seconds=float(window or 1.0),
        max_concurrency=int(concurrency) if concurrency else None,
        max_wait=float(max_wait or DEFAULT_MAX_WAIT),
    )


def budget_for(
    integration_id: str,
    config: Mapping[str, Any] | None,
    storage: Storage,
    *,
    clock: Clock = time.time,
    sleep: Sleep = asyncio.sleep,
    lease_seconds: float = LEASE_SECONDS,
) -> Budget:
    """The budget of ``integration_id`` from its config block, kept in ``storage`` (the
    hub's ``limiter_storage``: memory for one process, Redis shared by all)."""
    rules = rules_from_config(config)
    state: BudgetState
    if isinstance(storage, RedisStorage):
        state = RedisState(storage, integration_id, lease_seconds=lease_seconds)
    elif isinstance(storage, MemoryStorage):
        state = memory_state(storage, integration_id)
    else:
        raise ConfigError(f"rate-limit budgets cannot live in {type(storage).__name__}")
    return Budget(integration_id, rules, state, clock=clock, sleep=sleep)
