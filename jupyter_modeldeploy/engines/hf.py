"""Resolve model references that name a file on the Hugging Face hub.

Resolution goes through `huggingface_hub`, so the user's cache (and `HF_HUB_OFFLINE=1`)
is honoured; the token is passed as an argument and never put on a command line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

HF_FILE_RE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)/(?P<file>.+)$")


class ModelNotFound(FileNotFoundError):
    """The model reference is neither a local file nor a resolvable hub file."""


Progress = Callable[[int, "int | None"], None]


def _reporting_tqdm(progress: Progress) -> type:
    """A tqdm class for huggingface_hub that reports bytes done and total to `progress`."""
    from tqdm.auto import tqdm

    class Reporting(tqdm):  # type: ignore[misc, valid-type]
        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            progress(int(self.n), int(self.total) if self.total else None)
            return shown

    return Reporting


def resolve_model_file(model: str, *, token: str | None = None, revision: str | None = None,
                       progress: Progress | None = None) -> Path:
    """A local path for `model`: the path itself, or the hub file downloaded (or found in the cache).

    `progress` hears the download's bytes (done, total); a file found in the cache reports itself done.
    """
    local = Path(model).expanduser()
    if local.exists():
        return local.resolve()
    match = HF_FILE_RE.match(model)
    if not match or model.startswith(("/", ".", "~")):
        raise ModelNotFound(f"model file not found: {model}")
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cached = try_to_load_from_cache(match.group("repo"), match.group("file"), revision=revision)
    if progress is not None and isinstance(cached, str):
        size = Path(cached).stat().st_size
        progress(size, size)
    extra = {"tqdm_class": _reporting_tqdm(progress)} if progress is not None and not isinstance(cached, str) else {}
    try:
        path = hf_hub_download(
            repo_id=match.group("repo"), filename=match.group("file"), revision=revision, token=token, **extra
        )
    except LocalEntryNotFoundError as exc:
        raise ModelNotFound(
            f"{model}: not in the local Hugging Face cache and the hub cannot be reached ({type(exc).__name__})"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        # Messages from the hub client never contain the token; keep only the first line.
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelNotFound(f"{model}: {first}") from None
    return Path(path)
