"""The README's first command, run as a new user would: in a fresh clone, with nothing but
Python. It must install isthmus, start it on the embedded default and serve the API docs.

The command is read from the README (the fenced block after ``<!-- run-command -->``), so the
README and this test cannot drift apart. Installing takes a minute or two; everything else in
the suite takes seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.conftest import GRACEFUL_EXIT, Launcher, Server, clean_env, free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- run-command -->"
INSTALL_TIMEOUT = 240.0
KEY = re.compile(r"isk_[A-Za-z0-9_-]{43}")


def run_command(readme: str) -> str:
    """The one command line of the first fenced block after the marker."""
    lines = readme.splitlines()
    starts = [i for i, line in enumerate(lines) if MARKER in line]
    assert starts, f"the README has no {MARKER} line"
    rest = lines[starts[0] + 1 :]
    fences = [i for i, line in enumerate(rest) if line.strip().startswith("```")]
    assert len(fences) >= 2, f"no fenced code block after {MARKER}"
    assert all(not line.strip() for line in rest[: fences[0]]), "text between marker and block"
    body = [line.strip() for line in rest[fences[0] + 1 : fences[1]] if line.strip()]
    assert len(body) == 1, f"the run command must be one line, got {body}"
    return body[0].removeprefix("$ ")


def test_run_command_is_read_from_the_readme() -> None:
    readme = f"intro\n\n{MARKER}\n```sh\n$ do this && that\n```\n\n```sh\nnot this\n```\n"
    assert run_command(readme) == "do this && that"
    with pytest.raises(AssertionError, match="one line"):
        run_command(f"{MARKER}\n```\na\nb\n```\n")
    with pytest.raises(AssertionError, match="no <!-- run-command --> line"):
        run_command("```\na\n```\n")


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Path]:
    """A fresh clone of this repository (committed files only, as a new user gets them)."""
    if not (ROOT / ".git").exists():
        reason = f"{ROOT} is not a git checkout"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    target = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(target)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield target
    finally:
        # The virtualenv is the bulk of it; the rest goes with pytest's tmp_path.
        shutil.rmtree(target / ".venv", ignore_errors=True)


def start(launcher: Launcher, clone: Path, command: str) -> Server:
    port = free_port()
    # No ISTHMUS_* at all: the data directory is the default ./.isthmus, inside the clone.
    env = clean_env(ISTHMUS_PORT=str(port))
    server = launcher.shell_server(command, cwd=clone, env=env, port=port, home=clone / ".isthmus")
    server.wait_healthy(INSTALL_TIMEOUT)
    return server


def test_readme_run_command_serves_the_docs_in_a_fresh_clone(
    launcher: Launcher, clone: Path
) -> None:
    command = run_command((clone / "README.md").read_text())
    assert not (clone / ".isthmus").exists()

    server = start(launcher, clone, command)

    docs_url = f"{server.url}/api/docs"
    with server.client() as http:
        docs = http.get("/api/docs")
        assert docs.status_code == 200
        assert docs.headers["content-type"].startswith("text/html")
        assert "swagger" in docs.text.lower()
        spec = http.get("/openapi.json")
        assert spec.status_code == 200
        assert "/api/v1/integrations" in spec.json()["paths"]
    out = server.stdout()
    keys = KEY.findall(out)
    assert len(keys) == 1, server.tail()
    assert out.count(docs_url) == 1, server.tail()
    data = clone / ".isthmus"
    assert stat.S_IMODE((data / "master.keys").stat().st_mode) == 0o600
    assert (data / "isthmus.db").is_file()
    with server.client(keys[0]) as api:
        assert api.get("/api/v1/integrations").status_code == 200
    assert server.stop() in GRACEFUL_EXIT, server.tail()

    # The same command again, on the data directory the first run made: no new key.
    again = start(launcher, clone, command)
    assert KEY.findall(again.stdout()) == [], again.tail()
    assert again.stdout().count(f"{again.url}/api/docs") == 1, again.tail()
    with again.client(keys[0]) as api:
        assert api.get("/api/v1/integrations").status_code == 200
    assert again.stop() in GRACEFUL_EXIT, again.tail()
