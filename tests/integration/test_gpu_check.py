"""The GPU acceptance kit on the CPU, so it cannot rot between lendings of a GPU machine: a real bundle
(`make gpu-bundle`'s code, downloading from PyPI), checked against its manifest and the image list, then
`scripts/gpu_check.py --cpu` on the bundle's own models, and its report read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.gpu_kit import image, manifest
from scripts.gpu_kit.bundle import build

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, llama_server_bin: Path) -> Path:
    """A real bundle (the llama-server fixture makes sure the sdist it cuts from is in the cache)."""
    out = tmp_path_factory.mktemp("gpu") / "bundle"
    build(out, log=lambda _: None)
    return out


def test_the_bundle_is_sound_and_carries_only_what_the_image_lacks(bundle: Path) -> None:
    assert manifest.problems(bundle) == []
    data = manifest.load(bundle)
    assert data["total_bytes"] <= manifest.LIMIT_BYTES
    wheels = [f for f in data["files"] if f["kind"] == "wheel"]
    names = [f["name"] for f in wheels]
    assert len(names) == len(set(names)), "one version of each"
    assert not set(names) & image.image_packages()
    for needed in ("jupyter-modeldeploy", "jupyter-server", "tornado", "pydantic", "pydantic-core"):
        assert needed in names, needed
    for wheel in wheels:  # CPython 3.12 on manylinux x86-64, or pure Python
        tags = wheel["path"].removesuffix(".whl").split("-")[-3:]
        assert tags[2] == "any" or ("x86_64" in tags[2] and "manylinux" in tags[2]), wheel["path"]
        assert tags[1] in ("none", "abi3", "cp312"), wheel["path"]
    kinds = {f["kind"] for f in data["files"]}
    assert kinds == {"wheel", "llama.cpp-source", "model"}


def test_gpu_check_runs_on_the_cpu(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "scripts/gpu_check.py", "--cpu", "--bundle", str(bundle), "--out", str(out),
                           "--models", "bundle"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = json.loads((out / "gpu-report.json").read_text())
    statuses = [(s["number"], s["status"]) for s in report["steps"]]
    failed = {s["number"]: s["error"] for s in report["steps"] if s["status"] == "failed"}
    assert done.returncode == 0, (failed, statuses, done.stderr[-2000:])
    assert statuses == [("0", "ok"), ("1", "not applicable"), ("0m", "ok"), ("0j", "ok"), ("2", "ok"), ("3", "ok"),
                        ("4a", "not applicable"), ("0j", "ok"), ("4b", "ok")]
    assert report["complete"] is True and report["passed"] is True
    steps = {s["number"]: s for s in report["steps"]}
    assert steps["2"]["figures"]["cosine_min_vs_cpu"] >= 0.999
    assert steps["2"]["figures"]["gateway_16_clients"]["requests"] > 0
    assert steps["3"]["figures"]["disk_swap"]["swaps"] >= 4
    assert steps["4b"]["figures"]["cuda_visible_devices_seen_by_engine"] == "0"
    assert all(c["passed"] for s in report["steps"] for c in s["checks"])
    assert "seed 0" in report["models"]["minilm"] and "zero weights" in report["models"]["smollm2"]
    markdown = (out / "gpu-report.md").read_text()
    assert markdown.startswith("# GPU check: passed (cpu)") and "| 4b llamacpp deployment" in markdown
    assert (out / "gpu-report.json").stat().st_size < 200_000, "the report must come back whole"


def test_the_trimmed_llama_cpp_tree_configures(bundle: Path, tmp_path: Path) -> None:
    """CMake accepts the trimmed tree with the flags of a server build (configure only: a build takes minutes;
    a full CPU build of llama-server from it was made once, by hand, when the cut was chosen)."""
    from jupyter_modeldeploy.engines.llamacpp_install import plan_build
    from jupyter_modeldeploy.engines.llamacpp_source import extract
    from scripts.gpu_kit.bundle import LLAMA_ARCHIVE

    tree = extract(bundle / LLAMA_ARCHIVE, tmp_path / "src")
    assert (tree / "scripts" / "ui-assets.cmake").is_file(), "the build runs it to write the server's UI"
    done = subprocess.run(["cmake", "-S", str(tree), "-B", str(tmp_path / "build"), "-G", "Ninja",
                           *plan_build(backend="cpu").cmake_flags], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "build" / "build.ninja").is_file()
    assert "llama-server" in (tmp_path / "build" / "build.ninja").read_text()
