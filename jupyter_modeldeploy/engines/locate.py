"""Find a model's files on this server without downloading anything.

A local path is itself; a Hugging Face reference is looked up in the local cache only
(`try_to_load_from_cache`): a model that is not downloaded yet has no files to read.
"""

from __future__ import annotations

from pathlib import Path

from .hf import HF_FILE_RE


def _cached(repo: str, filename: str, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def gguf_file(reference: str, revision: str | None = None) -> Path | None:
    """The GGUF file of a llama.cpp model reference, if it is on this server."""
    local = Path(reference).expanduser()
    if local.is_file():
        return local
    match = HF_FILE_RE.match(reference)
    if not match or reference.startswith(("/", ".", "~")):
        return None
    return _cached(match.group("repo"), match.group("file"), revision)


def model_folder(reference: str, revision: str | None = None) -> Path | None:
    """The folder of a Hugging Face model (local, or the cached snapshot holding its config.json)."""
    local = Path(reference).expanduser()
    if local.is_dir():
        return local
    if reference.startswith(("/", ".", "~")) or reference.count("/") != 1:
        return None
    config = _cached(reference, "config.json", revision)
    return config.parent if config else None
