"""The GPU kit's bundle, without the network: the package selection against the image list, the
project's requirements, the manifest's checks, and the models' descriptions (tests/integration/
test_gpu_check.py builds a real bundle)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.gpu_kit import image, manifest, models, selection


def test_the_image_list_is_read_and_normalised() -> None:
    names = image.image_packages()
    assert len(names) > 150
    for present in ("torch", "sentence-transformers", "nvidia-ml-py", "psutil", "aiohttp", "uvloop", "pandas",
                    "prometheus-client", "typing-extensions", "huggingface-hub"):
        assert present in names, present
    for absent in ("pydantic", "pydantic-core", "jupyter-server", "tornado", "jupyterlab", "llama-cpp-python"):
        assert absent not in names, f"{absent} is not in the CUDA image: the bundle must carry it"
    assert all(n == image.normalise(n) for n in names)


def test_selection_bundles_exactly_what_the_image_lacks() -> None:
    resolved = [("Jupyter_Server", "2.21.1"), ("tornado", "6.6.1"), ("numpy", "2.5.5"), ("Typing.Extensions", "4.16.0"),
                ("pydantic-core", "2.50.5")]
    chosen = selection.select(resolved, image.image_packages())
    assert [p.requirement for p in chosen.bundled] == ["jupyter-server==2.21.1", "pydantic-core==2.50.5",
                                                       "tornado==6.6.1"]
    assert [p.name for p in chosen.in_image] == ["numpy", "typing-extensions"]


def test_one_version_of_each() -> None:
    assert len(selection.pins([("pydantic", "2.14.4"), ("Pydantic", "2.14.4")])) == 1
    with pytest.raises(selection.SelectionError, match="two versions"):
        selection.pins([("pydantic", "2.14.4"), ("pydantic", "2.13.0")])


def test_runtime_requirements_leave_out_extras_and_views() -> None:
    requires = ["jupyter_server<3,>=2.14", "jupyterlab<5,>=4.2", "ipywidgets>=8.1", "bqplot>=0.12.43", "pydantic<3,>=2.7",
                "sentence-transformers<7,>=6.2; extra == \"embedding\"", "pytest>=8; extra == 'test'",
                "tornado<7,>=6.4"]
    assert selection.runtime_requirements(requires) == ["jupyter_server<3,>=2.14", "pydantic<3,>=2.7", "tornado<7,>=6.4"]


def test_the_projects_declared_requirements_all_resolve_to_a_decision() -> None:
    """Every dependency in pyproject.toml is either left out on purpose or asked for."""
    import tomllib

    declared = tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]
    kept = selection.runtime_requirements(declared)
    assert len(kept) + len(selection.LEFT_OUT) == len(declared)
    assert {image.normalise(selection._name_of(r)) for r in declared} >= selection.LEFT_OUT


def make_bundle(folder: Path, sizes: dict[str, int]) -> Path:
    entries = []
    for name, size in sizes.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            handle.truncate(size)
        entries.append(manifest.entry(folder, path, "wheel", name, "1"))
    manifest.write(folder, entries)
    return folder


def test_a_sound_bundle_has_no_problems(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path, {"wheels/a.whl": 10, "models/m/config.json": 3})
    assert manifest.problems(folder) == []
    data = manifest.load(folder)
    assert data["total_bytes"] == 13 and {f["path"] for f in data["files"]} == {"wheels/a.whl", "models/m/config.json"}


def test_changed_missing_and_extra_files_are_found(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path, {"wheels/a.whl": 10, "wheels/b.whl": 5})
    (folder / "wheels" / "a.whl").write_bytes(b"x" * 10)
    (folder / "wheels" / "b.whl").unlink()
    (folder / "wheels" / "c.whl").write_bytes(b"")
    assert manifest.problems(folder) == ["missing: wheels/b.whl", "not in the manifest: wheels/c.whl",
                                         "changed: wheels/a.whl"]


def test_the_size_limit(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path, {"wheels/huge.whl": manifest.LIMIT_BYTES})
    assert any("over the limit" in p for p in manifest.problems(folder))


def test_models_travel_without_their_weights(tmp_path: Path) -> None:
    source = tmp_path / "minilm"
    (source / "1_Pooling").mkdir(parents=True)
    (source / "onnx").mkdir()
    for name in ("config.json", "vocab.txt", "modules.json", "model.safetensors", "1_Pooling/config.json", "onnx/model.onnx"):
        (source / name).write_text("{}")
    written = models.write_minilm_description(source, tmp_path / "out")
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in written) == [
        "1_Pooling/config.json", "config.json", "modules.json", "vocab.txt"]


def test_the_gguf_travels_as_its_header_and_comes_back_at_full_size(tmp_path: Path) -> None:
    from tests.unit.test_fit import write_gguf

    gguf = write_gguf(tmp_path / "m.gguf")
    header, size = models.write_gguf_header(gguf, tmp_path / "m.gguf.header")
    assert header.stat().st_size < size == gguf.stat().st_size
    rebuilt = models.build_zero_gguf(header, size, tmp_path / "again.gguf")
    data = rebuilt.read_bytes()
    assert len(data) == size and data[: header.stat().st_size] == header.read_bytes()
    assert set(data[header.stat().st_size:]) == {0}


def test_the_manifest_is_json_with_sorted_keys(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path, {"a.whl": 1})
    text = (folder / manifest.MANIFEST).read_text()
    assert json.loads(text)["limit_bytes"] == 56 * 2**20


@pytest.mark.skipif(not (Path(".gpu-bundle") / manifest.MANIFEST).is_file(), reason="no `make gpu-bundle` here yet")
def test_the_bundle_made_here_is_sound() -> None:
    folder = Path(".gpu-bundle")
    assert manifest.problems(folder) == []
    data = manifest.load(folder)
    names = {f["name"] for f in data["files"] if f["kind"] == "wheel"}
    assert not names & image.image_packages(), "a package the image has must not travel"
    assert "jupyter-modeldeploy" in names and "pydantic" in names


def test_the_source_digest_follows_the_code(tmp_path: Path) -> None:
    package = tmp_path / "jupyter_modeldeploy"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    (package / "data.json").write_text("{}")
    before = manifest.source_digest(package)
    (package / "data.json").write_text("[]")
    assert manifest.source_digest(package) == before, "only Python files count"
    (package / "sub" / "b.py").write_text("y = 3\n")
    assert manifest.source_digest(package) != before
