"""Running the real ``isthmus`` command in a subprocess, for the CLI tests (``test_cli*.py``).

The environment handed to it holds no ``ISTHMUS_*`` variable of the test run except those
given, so a developer's own settings cannot leak into what is tested.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from isthmus.api.app import create_app
from isthmus.config import Settings
from isthmus.hub import Hub

KEY = re.compile(r"isk_[A-Za-z0-9_-]{43}")
TIMEOUT = 60
#: What a CLI error must not show a user.
INTERNALS = ("Traceback", 'File "', "site-packages")


def isthmus_executable() -> str:
    beside = Path(sys.executable).with_name("isthmus")
    if beside.is_file():
        return str(beside)
    found = shutil.which("isthmus")
    assert found is not None, "the `isthmus` entry point is not installed"
    return found


def cli_env(settings: Settings | None = None, **values: str | None) -> dict[str, str]:
    """The environment for ``isthmus``: the data directory and store of ``settings`` (when
    given) plus ``values``; None leaves a variable out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISTHMUS_")}
    if settings is not None:
        env["ISTHMUS_HOME"] = str(settings.home)
        if settings.database_url is not None:
            env["ISTHMUS_DATABASE_URL"] = settings.database_url
        if settings.master_keys is not None:
            env["ISTHMUS_MASTER_KEYS"] = settings.master_keys.get_secret_value()
    for k, v in values.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run_cli(
    args: Sequence[str],
    env: dict[str, str],
    *,
    input: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``isthmus *args``, bounded in time; stdin is empty unless ``input`` is given."""
    return subprocess.run(
        [isthmus_executable(), *args],
        env=env,
        cwd=cwd,
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


Call = tuple[Sequence[str], dict[str, str]] | tuple[Sequence[str], dict[str, str], str]


def run_many(calls: Sequence[Call]) -> list[subprocess.CompletedProcess[str]]:
    """Independent ``isthmus`` runs at once (each start of the command costs about a second),
    as ``(args, env)`` or ``(args, env, stdin)``; results in the order given."""
    started = [
        subprocess.Popen(
            [isthmus_executable(), *call[0]],
            env=call[1],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for call in calls
    ]
    results = []
    try:
        for call, proc in zip(calls, started, strict=True):
            stdin = call[2] if len(call) == 3 else ""
            out, err = proc.communicate(stdin, timeout=TIMEOUT)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """stdout of a command that must have succeeded."""
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """stderr of a command that must have failed with ``code`` and a one-line reason."""
    assert result.returncode == code, (result.args, result.returncode, result.stdout, result.stderr)
    for internal in INTERNALS:
        assert internal not in result.stderr + result.stdout
    return result.stderr


def printed_key(stdout: str) -> str:
    [key] = KEY.findall(stdout)
    return key


class FreshApp:
    """A hub and app built anew from settings, as a restarted server would be."""

    def __init__(self, settings: Settings, key: str) -> None:
        self.settings = settings
        self.key = key

    async def __aenter__(self) -> httpx.AsyncClient:
        self.hub = Hub.build(self.settings)
        transport = httpx.ASGITransport(
            app=create_app(self.settings, self.hub), client=("127.0.0.1", 50000)
        )
        self.client = httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {self.key}"},
        )
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.hub.close()
