"""Build a local Hugging Face cache holding one file, as `hf_hub_download` lays it out."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def seed_hf_cache(root: Path, repo_id: str, filename: str, source: Path, revision: str = "main") -> Path:
    """Place `source` in a hub cache under `root` as `repo_id`/`filename`; returns the cache dir.

    With HF_HUB_OFFLINE=1 and HF_HUB_CACHE=<returned dir>, huggingface_hub resolves the file
    without any network, which is how hub references are tested on machines with no hub.
    """
    commit = hashlib.sha1(f"{repo_id}/{filename}".encode()).hexdigest()
    repo_dir = root / f"models--{repo_id.replace('/', '--')}"
    blob = repo_dir / "blobs" / hashlib.sha256(str(source).encode()).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        os.symlink(source, blob)
    target = repo_dir / "snapshots" / commit / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.symlink(os.path.relpath(blob, target.parent), target)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)
    return root
