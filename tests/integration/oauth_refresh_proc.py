"""One process of the concurrent-refresh test in ``test_oauth.py`` (not a test module).

    python oauth_refresh_proc.py HOME DATABASE_URL TENANT_ID INTEGRATION_ID NOW

Builds the hub as ``isthmus serve`` would (same data directory, so the same master key), takes
the integration's OAuth2 auth with its clock stopped at NOW (ISO 8601), prints ``ready``,
waits for a line on stdin, then asks for the access token and prints ``token <value>``.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path

from isthmus.config import load_settings
from isthmus.hub import Hub


async def main(home: str, url: str, tenant_id: str, integration_id: str, now: str) -> None:
    settings = load_settings(home=Path(home), database_url=url, outbound_allowlist=["127.0.0.0/8"])
    hub = Hub.build(settings)
    try:
        moment = datetime.fromisoformat(now)
        auth = await hub.oauth.auth_for(tenant_id, integration_id, clock=lambda: moment)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        print(f"token {await auth.token()}", flush=True)
    finally:
        await hub.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
