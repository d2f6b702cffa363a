"""pip for the GPU host's platform: resolve the dependency closure, then download exactly those wheels.

Both run here (PyPI reachable) for CPython 3.12 on manylinux x86-64, whatever this machine runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .selection import Pin

PYTHON_VERSION = "3.12"
# pip matches a manylinux tag exactly: name every glibc level a wheel may be tagged with (the image's is 2.35+).
PLATFORMS = ("manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_26_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64")


def target_flags() -> list[str]:
    """pip's flags for the target: binary wheels only, CPython 3.12, the manylinux x86-64 tags."""
    flags = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
             "--abi", "cp" + PYTHON_VERSION.replace(".", "")]
    for platform in PLATFORMS:
        flags += ["--platform", platform]
    return flags


def resolve(requirements: Iterable[str]) -> list[tuple[str, str]]:
    """(name, version) of every distribution pip's resolver picks for `requirements` on the target.

    A dry run with a report: metadata only, no wheel is installed."""
    with tempfile.TemporaryDirectory(prefix="gpu-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
             "--disable-pip-version-check", "--report", str(report), "--target", str(Path(tmp) / "t"),
             *target_flags(), *requirements],
            check=True,
        )
        data = json.loads(report.read_text(encoding="utf-8"))
    return [(item["metadata"]["name"], item["metadata"]["version"]) for item in data["install"]]


def download(pins: Iterable[Pin], dest: Path) -> list[Path]:
    """Download the wheel of each pin (no dependencies: the set is already closed) into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    requirements = [p.requirement for p in pins]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
         *target_flags(), "-d", str(dest), *requirements],
        check=True,
    )
    return sorted(dest.glob("*.whl"))
