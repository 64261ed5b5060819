"""Process helpers for the end-to-end tests: start real ``isthmus`` processes, talk to them
over HTTP, and always stop them, whatever the test did.

``tests/e2e`` is a package (it has an ``__init__.py``) so that this conftest is imported as
``e2e.conftest`` and does not take the place of ``tests/conftest.py`` as the module named
``conftest``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

#: The key ``isthmus serve`` prints on first start: ``isk_`` + 32 random bytes, base64url.
ADMIN_KEY = re.compile(r"isk_[A-Za-z0-9_-]{43}")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
#: How ``serve`` ends on SIGTERM: uvicorn shuts down gracefully, then re-raises the signal.
GRACEFUL_EXIT = (0, -signal.SIGTERM)


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def isthmus_executable() -> str:
    """The installed ``isthmus`` entry point of the interpreter running the tests."""
    beside = Path(sys.executable).with_name("isthmus")
    if beside.is_file():
        return str(beside)
    found = shutil.which("isthmus")
    if found is None:
        pytest.fail("the `isthmus` entry point is not installed: run `pip install -e .`")
    return found


def clean_env(**values: str | None) -> dict[str, str]:
    """The test's environment without any ``ISTHMUS_*`` setting, plus ``values``
    (a value of None leaves that variable out)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ISTHMUS_") and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    env.update({k: v for k, v in values.items() if v is not None})
    return env


@dataclass
class Process:
    """One started process in its own process group, its output captured to files."""

    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.stdout_path.read_bytes().decode(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_bytes().decode(errors="replace")

    def output(self) -> bytes:
        return self.stdout_path.read_bytes() + self.stderr_path.read_bytes()

    def tail(self, lines: int = 40) -> str:
        out = self.stdout().splitlines()[-lines:]
        err = self.stderr().splitlines()[-lines:]
        return "--- stdout ---\n" + "\n".join(out) + "\n--- stderr ---\n" + "\n".join(err)

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM to the whole group, then SIGKILL if it is still there after ``timeout``."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        # Children left behind by a shell (the group outlives its leader) go too.
        _signal_group(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass
class Server(Process):
    """An ``isthmus serve`` listening on ``port``."""

    port: int = 0
    home: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin_keys(self) -> list[str]:
        """Every admin key the process printed (the first start prints exactly one)."""
        return ADMIN_KEY.findall(self.stdout())

    def admin_key(self) -> str:
        keys = self.admin_keys()
        assert len(keys) == 1, f"expected one printed admin key, got {len(keys)}\n{self.tail()}"
        return keys[0]

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # trust_env=False: a proxy configured in the environment must not carry loopback calls.
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, trust_env=False)

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Poll ``/healthz`` until it answers 200; fail with the output if the process dies
        or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                pytest.fail(f"isthmus exited with {self.proc.returncode}\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"isthmus did not answer /healthz in {timeout:.0f}s\n{self.tail()}")
            time.sleep(0.2)


@dataclass
class Launcher:
    """Starts processes for one test and stops every one of them at teardown."""

    workdir: Path
    started: list[Process] = field(default_factory=list)

    def _open(self, name: str) -> tuple[Path, Path]:
        n = len(self.started)
        return self.workdir / f"{n:02d}-{name}.out", self.workdir / f"{n:02d}-{name}.err"

    def spawn(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
        name: str = "proc",
    ) -> Process:
        out, err = self._open(name)
        with out.open("wb") as fout, err.open("wb") as ferr:
            proc = subprocess.Popen(
                list(args),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=fout,
                stderr=ferr,
                start_new_session=True,  # its own process group: stop() kills all of it
            )
        process = Process(proc, out, err)
        self.started.append(process)
        return process

    def serve(
        self,
        *,
        home: Path,
        database_url: str | None = None,
        redis_url: str | None = None,
        env: Mapping[str, str | None] | None = None,
        options: Sequence[str] = (),
        serve_args: Sequence[str] = (),
        wait: bool = True,
        timeout: float = START_TIMEOUT,
    ) -> Server:
        """``isthmus [options] serve [serve_args]`` on a free port, with the given data
        directory and store; ``env`` adds variables (None removes one)."""
        port = free_port()
        full_env = clean_env(
            ISTHMUS_HOME=str(home),
            ISTHMUS_PORT=str(port),
            ISTHMUS_DATABASE_URL=database_url,
            ISTHMUS_REDIS_URL=redis_url,
        )
        for k, v in (env or {}).items():
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = v
        args = [isthmus_executable(), *options, "serve", *serve_args]
        process = self.spawn(args, env=full_env, name="serve")
        server = Server(process.proc, process.stdout_path, process.stderr_path, port, home)
        self.started[-1] = server
        if wait:
            server.wait_healthy(timeout)
        return server

    def shell_server(
        self, command: str, *, cwd: Path, env: Mapping[str, str], port: int, home: Path
    ) -> Server:
        """A shell command line that ends up serving on ``port`` (the README's, say);
        not waited for: call ``wait_healthy`` with the time it may need."""
        process = self.spawn(["bash", "-c", command], env=env, cwd=cwd, name="shell")
        server = Server(process.proc, process.stdout_path, process.stderr_path, port, home)
        self.started[-1] = server
        return server

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """Start ``isthmus`` processes; all of them are stopped when the test ends, pass or fail."""
    logs = tmp_path / "process-logs"
    logs.mkdir()
    started = Launcher(logs)
    try:
        yield started
    finally:
        started.stop_all()
