"""Where the project keeps things outside the repository: built engines, caches, state."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir


def cache_root() -> Path:
    """The user's cache directory for built engines, engine environments and test models.

    `JUPYTER_MODELDEPLOY_CACHE` overrides it.
    """
    override = os.environ.get("JUPYTER_MODELDEPLOY_CACHE")
    return Path(override) if override else Path(user_cache_dir("jupyter-modeldeploy"))
