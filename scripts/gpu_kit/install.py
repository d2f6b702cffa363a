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


def fresh(bundle_manifest: dict, checkout: Path) -> bool:
    """Whether the bundle was made from the checkout's code (same digest of jupyter_modeldeploy's Python files)."""
    return bundle_manifest.get("source_sha256") == manifest.source_digest(checkout / "jupyter_modeldeploy")


def install(bundle: Path, prefix: Path, checkout: Path) -> Path:
    """`pip install --no-index --no-deps --target prefix` of every wheel, then `checkout` and the prefix first on
    the import path of this process and of every process it starts (PYTHONPATH).

    The checkout comes first: the Jupyter server runs from it (`python -m` puts it first there too), so every
    process runs the same code, the checkout's; `fresh` says whether the bundle's wheel was made from it."""
    wheels = sorted(str(p) for p in (bundle / "wheels").glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                    "--disable-pip-version-check", "--target", str(prefix), *wheels], check=True)
    sys.path.insert(sys.path.index(str(checkout)) + 1 if str(checkout) in sys.path else 0, str(prefix))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(checkout), str(prefix), os.environ.get("PYTHONPATH", "")) if p)
    # The prefix's console scripts (jupyter-server, ...) for `python -m jupyter server`.
    os.environ["PATH"] = os.pathsep.join([str(prefix / "bin"), os.environ.get("PATH", "")])
    return prefix
