"""The trimmed llama.cpp tree: which files a llama-server build keeps, and the archive round trip."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from jupyter_modeldeploy.engines import llamacpp_source as src


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("CMakeLists.txt", True),
        ("ggml/src/ggml.c", True),
        ("ggml/src/ggml-cpu/ggml-cpu.c", True),
        ("ggml/src/ggml-cuda/mmq.cu", True),
        ("ggml/src/ggml-cuda/template-instances/fattn-vec.cu", True),
        ("ggml/src/ggml-vulkan/ggml-vulkan.cpp", False),
        ("ggml/src/ggml-metal/ggml-metal.m", False),
        ("ggml/src/ggml-backend.cpp", True),
        ("tools/server/server.cpp", True),
        ("tools/server/tests/unit/test_basic.py", False),
        ("tools/ui/CMakeLists.txt", True),
        ("tools/ui/ui.cpp.in", True),
        ("tools/ui/src/app.ts", False),
        ("tools/ui/package-lock.json", False),
        ("models/ggml-vocab-llama.gguf", False),
        ("docs/build.md", False),
        ("convert_hf_to_gguf.py", False),
        ("tests/test-backend-ops.cpp", False),
        ("vendor/cpp-httplib/httplib.h", True),
        ("app/llama.cpp", True),
        ("scripts/ui-assets.cmake", True),
        ("scripts/sync_vendor.py", False),
        ("scripts/tools/x.cmake", False),
    ],
)
def test_what_a_server_build_keeps(path: str, kept: bool) -> None:
    assert src.keep(path) is kept


def fake_sdist(folder: Path, files: dict[str, bytes]) -> Path:
    sdist = folder / "llama_cpp_python-9.9.9.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"llama_cpp_python-9.9.9/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return sdist


def test_round_trip_keeps_the_build_and_drops_the_rest(tmp_path: Path) -> None:
    sdist = fake_sdist(tmp_path, {
        "vendor/llama.cpp/CMakeLists.txt": b"project(llama)\n",
        "vendor/llama.cpp/src/llama.cpp": b"int x;\n",
        "vendor/llama.cpp/models/big.gguf": b"\0" * 1000,
        "llama_cpp/__init__.py": b"",
    })
    archive = src.write_trimmed(sdist, tmp_path / "out" / "llama.tar.xz")
    root = src.extract(archive, tmp_path / "tree")
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == ["CMakeLists.txt", "src/llama.cpp"]
    assert (root / "src" / "llama.cpp").read_bytes() == b"int x;\n"


def test_an_sdist_without_llama_cpp_is_an_error(tmp_path: Path) -> None:
    sdist = fake_sdist(tmp_path, {"llama_cpp/__init__.py": b""})
    with pytest.raises(RuntimeError, match=r"no vendor/llama\.cpp"):
        src.write_trimmed(sdist, tmp_path / "llama.tar.xz")
    assert not (tmp_path / "llama.tar.xz").exists()
