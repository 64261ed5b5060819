"""isthmus: a self-hosted integration hub."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from isthmus.connectors.client import APIClient

__all__ = ["APIClient", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import isthmus` (the CLI, `isthmus.__version__`) stays cheap.
    if name == "APIClient":
        from isthmus.connectors.client import APIClient

        return APIClient
    raise AttributeError(f"module 'isthmus' has no attribute {name!r}")
