"""Where the project keeps things outside the repository: built engines, caches, state."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from platformdirs import user_cache_dir


def cache_root() -> Path:
    """The user's cache directory for built engines, engine environments and test models.

    `JUPYTER_MODELDEPLOY_CACHE` overrides it.
    """
    override = os.environ.get("JUPYTER_MODELDEPLOY_CACHE")
    return Path(override) if override else Path(user_cache_dir("jupyter-modeldeploy"))


@contextmanager
def folder_lock(folder: Path, name: str = ".lock") -> Iterator[None]:
    """An exclusive lock on a cache folder, so two processes never build the same thing at once."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
