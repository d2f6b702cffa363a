"""The llama.cpp source a `llama-server` build needs, cut out of the pinned llama-cpp-python sdist.

The sdist carries all of llama.cpp (about 176 MB unpacked: models, docs, every GPU backend, the web
UI's sources). A CPU or CUDA build of `llama-server` reads far less: the CMake files, `ggml` with its
CPU and CUDA backends, `src`, `include`, `common`, `vendor`, `tools` (the web UI's sources left
out: the build runs with `LLAMA_BUILD_UI=OFF`) and the CMake scripts of `scripts/`. `write_trimmed`
packs that into one small archive, which travels where nothing can be downloaded; `extract` unpacks it
for `build_llama_server(source=)`.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

# Top-level entries of the llama.cpp tree a llama-server build reads; everything else is left out.
KEPT_TOP = frozenset({"CMakeLists.txt", "LICENSE", "app", "cmake", "common", "ggml", "include", "licenses", "src", "tools",
                      "vendor"})
# ggml backends built here: the CPU one always, CUDA for GPU hosts; the other backends' folders are only
# read when their GGML_<NAME> option is on.
KEPT_BACKENDS = frozenset({"ggml-cpu", "ggml-cuda"})
# Of tools/ui, only what its CMake file reads when the UI is neither built nor downloaded; of scripts/, the
# CMake scripts the build runs (scripts/ui-assets.cmake writes the server's empty UI).
UI_KEPT_SUFFIXES = (".txt", ".cmake", ".in")
ROOT_NAME = "llama.cpp"


def keep(relative: str) -> bool:
    """Whether a path inside the llama.cpp tree (POSIX, relative to its root) belongs to the trimmed tree."""
    parts = PurePosixPath(relative).parts
    if len(parts) == 2 and parts[0] == "scripts":
        return parts[1].endswith(".cmake")
    if not parts or parts[0] not in KEPT_TOP:
        return False
    if len(parts) >= 3 and parts[:2] == ("ggml", "src") and parts[2].startswith("ggml-") and "." not in parts[2]:
        return parts[2] in KEPT_BACKENDS
    if parts[:2] == ("tools", "ui") and len(parts) >= 3:
        return len(parts) == 3 and parts[2].endswith(UI_KEPT_SUFFIXES)
    return not (len(parts) >= 3 and parts[:2] == ("tools", "server") and parts[2] == "tests")


def _vendor_prefix(sdist: Path) -> str:
    version = sdist.name.removeprefix("llama_cpp_python-").removesuffix(".tar.gz")
    return f"llama_cpp_python-{version}/vendor/llama.cpp/"


def write_trimmed(sdist: Path, dest: Path) -> Path:
    """Write the trimmed tree of `sdist` to `dest` (a .tar.xz whose files lie under `llama.cpp/`); returns `dest`.

    Members are written in name order with fixed owners, so the same sdist gives the same archive contents.
    """
    prefix = _vendor_prefix(sdist)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as src, tarfile.open(dest, "w:xz") as out:
        members = sorted((m for m in src.getmembers() if m.isfile() and m.name.startswith(prefix)),
                         key=lambda m: m.name)
        kept = 0
        for member in members:
            relative = member.name[len(prefix):]
            if not keep(relative):
                continue
            data = src.extractfile(member)
            info = tarfile.TarInfo(f"{ROOT_NAME}/{relative}")
            info.size, info.mtime, info.mode = member.size, member.mtime, member.mode
            out.addfile(info, data)
            kept += 1
    if not kept:
        dest.unlink(missing_ok=True)
        raise RuntimeError(f"{sdist.name} carries no vendor/llama.cpp source")
    return dest


def extract(archive: Path, into: Path) -> Path:
    """Unpack an archive `write_trimmed` made; returns the source tree's root (holding CMakeLists.txt)."""
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    root = into / ROOT_NAME
    if not (root / "CMakeLists.txt").is_file():
        raise RuntimeError(f"{archive.name} holds no llama.cpp source tree")
    return root
