"""The GPU check's install of a bundle: a wheel into a temporary prefix, the checkout still first on the path."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from scripts.gpu_kit import install, manifest


def tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel of one module, `gpukit_probe`."""
    wheel = folder / "wheels" / "gpukit_probe-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("gpukit_probe.py", "VALUE = 42\n")
        archive.writestr("gpukit_probe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: gpukit-probe\nVersion: 1.0\n")
        archive.writestr("gpukit_probe-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n")
        archive.writestr("gpukit_probe-1.0.dist-info/RECORD", "")
    return wheel


def test_install_puts_the_prefix_after_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "bundle"
    wheel = tiny_wheel(bundle)
    manifest.write(bundle, [manifest.entry(bundle, wheel, "wheel", "gpukit-probe", "1.0")])
    assert install.verify(bundle)["files"][0]["name"] == "gpukit-probe"
    checkout = tmp_path / "checkout"
    monkeypatch.setattr(sys, "path", [str(checkout), *sys.path])
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("PATH", os.environ["PATH"])
    prefix = install.install(bundle, tmp_path / "prefix", checkout)
    assert (prefix / "gpukit_probe.py").is_file()
    assert sys.path[:2] == [str(checkout), str(prefix)]
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(checkout), str(prefix), "/elsewhere"]
    child = subprocess.run([sys.executable, "-c", "import gpukit_probe; print(gpukit_probe.VALUE)"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "42", "processes the check starts find the bundle's packages"


def test_a_bundle_that_does_not_match_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    wheel = tiny_wheel(bundle)
    manifest.write(bundle, [manifest.entry(bundle, wheel, "wheel", "gpukit-probe", "1.0")])
    wheel.write_bytes(b"damaged")
    with pytest.raises(RuntimeError, match="changed: wheels/gpukit_probe"):
        install.verify(bundle)


def test_fresh_compares_the_checkouts_code(tmp_path: Path) -> None:
    (tmp_path / "jupyter_modeldeploy").mkdir()
    (tmp_path / "jupyter_modeldeploy" / "x.py").write_text("pass\n")
    digest = manifest.source_digest(tmp_path / "jupyter_modeldeploy")
    assert install.fresh({"source_sha256": digest}, tmp_path)
    assert not install.fresh({"source_sha256": "0" * 64}, tmp_path) and not install.fresh({}, tmp_path)
