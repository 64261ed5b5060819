"""Fixtures shared by every test directory."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def redis_url() -> str:
    """The test Redis, from ``ISTHMUS_TEST_REDIS_URL``.

    A laptop without Redis skips with a visible reason; CI (``CI=true``) must have it, so
    there a missing URL fails instead of silently skipping the Redis half of the suite.
    """
    url = os.environ.get("ISTHMUS_TEST_REDIS_URL")
    if not url:
        reason = "ISTHMUS_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the Redis tests")
        pytest.skip(reason)
    return url
