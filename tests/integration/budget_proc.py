"""One process holding an integration's Redis budget, for ``test_connector_budget.py`` (not a
test module).

    python budget_proc.py REDIS_URL KEY_PREFIX INTEGRATION_ID MODE CONFIG_JSON [ARG]

Modes:

- ``hammer SECONDS``: print ``ready``, wait for a line on stdin, then for SECONDS run three
  callers that each take a slot, hold it 20 ms and let it go; print one JSON line
  ``[[entered, left], ...]`` (epoch seconds, taken inside the slot).
- ``pause RETRY_AFTER``: print the epoch time, then answer the budget a 429 with that
  ``Retry-After``; print ``paused`` and exit.
- ``hold LEASE_SECONDS``: take a slot with that lease and print ``holding``; keep it until
  killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from isthmus.connectors.ratelimit import budget_for
from isthmus.ratelimit_storage import close_storage, make_storage


async def main(
    url: str, prefix: str, integration_id: str, mode: str, config: Any, arg: str
) -> None:
    storage = make_storage(url, key_prefix=prefix)
    lease = float(arg) if mode == "hold" else 15.0
    budget = budget_for(integration_id, config, storage, lease_seconds=lease)
    try:
        if mode == "hammer":
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            spans: list[list[float]] = []
            until = time.time() + float(arg)

            async def caller() -> None:
                while time.time() < until:
                    async with budget.slot():
                        entered = time.time()
                        await asyncio.sleep(0.02)
                        spans.append([entered, time.time()])

            await asyncio.gather(*(caller() for _ in range(3)))
            print(json.dumps(spans), flush=True)
        elif mode == "pause":
            print(time.time(), flush=True)
            await budget.observe(429, {"Retry-After": arg})
            print("paused", flush=True)
        elif mode == "hold":
            async with budget.slot():
                print("holding", flush=True)
                await asyncio.Event().wait()
    finally:
        await close_storage(storage)


if __name__ == "__main__":
    url, prefix, integration_id, mode, config, *rest = sys.argv[1:]
    asyncio.run(main(url, prefix, integration_id, mode, json.loads(config), rest[0]))
