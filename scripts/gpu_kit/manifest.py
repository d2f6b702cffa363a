"""The bundle's manifest: every file with its kind, version, size and sha256; written here, verified there."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
# What travels to a lent machine is at most 64 MiB with the repository: the bundle keeps 8 MiB for the rest.
LIMIT_BYTES = 56 * 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One file of the bundle (path relative to the bundle's folder)."""

    path: str
    kind: str  # "wheel", "llama.cpp-source", "model"
    name: str
    version: str
    size: int
    sha256: str
    notes: dict[str, Any] = field(default_factory=dict)


def sha256(path: Path) -> str:
    """The file's sha256, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def entry(folder: Path, path: Path, kind: str, name: str, version: str, **notes: Any) -> Entry:
    """The manifest entry of a file already in `folder`."""
    return Entry(str(path.relative_to(folder)), kind, name, version, path.stat().st_size, sha256(path), notes)


def source_digest(package: Path) -> str:
    """One sha256 over the package's Python files (paths and contents): which code a bundle was made from."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def write(folder: Path, entries: list[Entry], **about: Any) -> Path:
    """Write `manifest.json` into `folder`: the entries, their total, and what `about` says."""
    total = sum(e.size for e in entries)
    data = {"total_bytes": total, "limit_bytes": LIMIT_BYTES, **about, "files": [asdict(e) for e in entries]}
    path = folder / MANIFEST
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def load(folder: Path) -> dict[str, Any]:
    """The manifest of a bundle folder."""
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))


def problems(folder: Path) -> list[str]:
    """What is wrong with a bundle folder: files missing, extra or changed, or the limit passed; [] when sound."""
    data = load(folder)
    found = []
    listed = {f["path"]: f for f in data["files"]}
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST}
    found += [f"missing: {p}" for p in sorted(set(listed) - present)]
    found += [f"not in the manifest: {p}" for p in sorted(present - set(listed))]
    for path in sorted(set(listed) & present):
        real = folder / path
        if real.stat().st_size != listed[path]["size"] or sha256(real) != listed[path]["sha256"]:
            found.append(f"changed: {path}")
    total = sum(f["size"] for f in data["files"])
    if total != data["total_bytes"]:
        found.append(f"total_bytes says {data['total_bytes']}, the files add up to {total}")
    on_disk = sum((folder / p).stat().st_size for p in present) + (folder / MANIFEST).stat().st_size
    if on_disk > LIMIT_BYTES:
        found.append(f"{on_disk} bytes, over the limit of {LIMIT_BYTES}")
    return found
