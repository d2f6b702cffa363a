"""The bundle on the GPU host: checked against its manifest, installed into a temporary prefix, no network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from . import manifest


def verify(bundle: Path) -> dict:
    """The bundle's manifest, once every file is checked against it (RuntimeError naming what is wrong)."""
    found = manifest.problems(bundle)
    if found:
        raise RuntimeError("the bundle does not match its manifest: " + "; ".join(found))
    return manifest.load(bundle)


def install(bundle: Path, prefix: Path) -> Path:
    """`pip install --no-index --no-deps --target prefix` of every wheel, then the prefix first on the import path
    of this process and of every process it starts (PYTHONPATH)."""
    wheels = sorted(str(p) for p in (bundle / "wheels").glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                    "--disable-pip-version-check", "--target", str(prefix), *wheels], check=True)
    sys.path.insert(0, str(prefix))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(prefix), os.environ.get("PYTHONPATH", "")) if p)
    # The prefix's console scripts (jupyter-server, ...) for `python -m jupyter server`.
    os.environ["PATH"] = os.pathsep.join([str(prefix / "bin"), os.environ.get("PATH", "")])
    return prefix
