"""Build llama.cpp's `llama-server` from the source inside the pinned llama-cpp-python sdist.

The binary is cached per llama-cpp-python version and backend under the user's cache
directory, so a second install (or test run) reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..paths import cache_root

LLAMA_CPP_PYTHON_VERSION = "0.3.36"

# A native build crashed with an illegal instruction on VMs that hide CPU features the host
# advertises (AMX); a portable AVX2 build runs everywhere this project is used.
PORTABLE_CPU_FLAGS: tuple[str, ...] = (
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_BMI2=ON",
)
SERVER_FLAGS: tuple[str, ...] = (
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    # Shared libraries: the same libllama.so serves llama-cpp-python's fallback server
    # (LLAMA_CPP_LIB_PATH), so the fallback needs no second compile.
    "-DBUILD_SHARED_LIBS=ON",
    "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
    "-DCMAKE_INSTALL_RPATH=$ORIGIN/../lib",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DCMAKE_BUILD_TYPE=Release",
)
NINJA_PROGRESS_RE = re.compile(r"^\[(\d+)/(\d+)\]")


@dataclass(frozen=True)
class BuildPlan:
    """What to build and where the result lands."""

    version: str
    backend: str  # "cpu" or "cuda"
    cmake_flags: tuple[str, ...]

    @property
    def key(self) -> str:
        digest = hashlib.sha256(" ".join(self.cmake_flags).encode()).hexdigest()[:8]
        return f"{self.version}-{self.backend}-{digest}"

    @property
    def install_dir(self) -> Path:
        return cache_root() / "llama.cpp" / self.key

    @property
    def lib_dir(self) -> Path:
        """Shared libraries (libllama.so, libggml*.so), also used by the llama-cpp-python fallback."""
        return self.install_dir / "lib"

    @property
    def server_binary(self) -> Path:
        return self.install_dir / "bin" / "llama-server"


def cuda_available() -> bool:
    """True when a CUDA build can be made and run here: nvcc on PATH and an NVIDIA driver.

    nvcc alone is not enough: a CUDA build on a host without the driver cannot load.
    """
    has_driver = Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None
    return shutil.which("nvcc") is not None and has_driver


def plan_build(
    version: str = LLAMA_CPP_PYTHON_VERSION, backend: str | None = None, *, cuda_architectures: str | None = None
) -> BuildPlan:
    """Choose the backend (CUDA when nvcc and an NVIDIA driver are present) and the CMake flags.

    `cuda_architectures` (CMake's `CMAKE_CUDA_ARCHITECTURES`, e.g. "90"): build the CUDA kernels for those
    architectures only, which takes a fraction of the time of llama.cpp's default list; the flag is part of
    the cache key, so such a build never stands in for a general one.
    """
    if backend is None:
        backend = "cuda" if cuda_available() else "cpu"
    flags = list(PORTABLE_CPU_FLAGS + SERVER_FLAGS)
    if backend == "cuda":
        flags.append("-DGGML_CUDA=ON")
        if cuda_architectures:
            flags.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_architectures}")
    return BuildPlan(version=version, backend=backend, cmake_flags=tuple(flags))


def find_llama_server() -> Path | None:
    """The newest cached `llama-server` for the pinned version, CUDA preferred; None if none."""
    base = cache_root() / "llama.cpp"
    for backend in ("cuda", "cpu"):
        binary = plan_build(backend=backend).server_binary
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    if base.is_dir():
        for candidate in sorted(base.glob(f"{LLAMA_CPP_PYTHON_VERSION}-*/bin/llama-server")):
            if os.access(candidate, os.X_OK):
                return candidate
    return None


def _download_sdist(version: str, dest: Path, log: Callable[[str], None]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(f"llama_cpp_python-{version}.tar.gz"))
    if found:
        return found[0]
    log(f"downloading llama-cpp-python {version} source")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         f"llama-cpp-python=={version}", "-d", str(dest)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    found = sorted(dest.glob(f"llama_cpp_python-{version}.tar.gz"))
    if not found:
        raise RuntimeError(f"pip did not download llama-cpp-python {version} as an sdist")
    return found[0]


def _extract_llama_source(sdist: Path, workdir: Path) -> Path:
    prefix = f"llama_cpp_python-{sdist.name.split('-')[1].removesuffix('.tar.gz')}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise RuntimeError(f"{sdist.name} carries no vendor/llama.cpp source")
        tar.extractall(workdir, members=members, filter="data")
    return workdir / prefix


def _progress_bar(done: int, total: int) -> str:
    width = 30
    filled = int(width * done / max(total, 1))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def sdist_folder() -> Path:
    """Where the pinned llama-cpp-python sdist is downloaded to (and found again)."""
    return cache_root() / "downloads"


def ensure_sdist(version: str = LLAMA_CPP_PYTHON_VERSION, log: Callable[[str], None] = print) -> Path:
    """The llama-cpp-python sdist of `version` in the cache, downloaded first if it is not there yet."""
    return _download_sdist(version, sdist_folder(), log)


def build_llama_server(
    plan: BuildPlan | None = None,
    *,
    force: bool = False,
    jobs: int | None = None,
    log: Callable[[str], None] = print,
    source: Path | None = None,
) -> Path:
    """Build (or reuse) `llama-server`; returns the path of the binary.

    `source`: a llama.cpp source tree to build from (one `llamacpp_source.write_trimmed` made, say) instead
    of the one inside the downloaded sdist; nothing is downloaded then.
    """
    plan = plan or plan_build()
    if plan.server_binary.exists() and not force:
        log(f"llama-server {plan.key} already built: {plan.server_binary}")
        return plan.server_binary
    for tool in ("cmake", "ninja"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is needed to build llama-server; install it first")
    if source is not None and not (source / "CMakeLists.txt").is_file():
        raise RuntimeError(f"{source} is not a llama.cpp source tree (no CMakeLists.txt)")
    with tempfile.TemporaryDirectory(prefix="llama-build-") as tmp:
        if source is None:
            source = _extract_llama_source(ensure_sdist(plan.version, log), Path(tmp))
        build = Path(tmp) / "build"
        log(f"configuring llama.cpp ({plan.backend}) ...")
        subprocess.run(
            ["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", *plan.cmake_flags],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        cmd = ["cmake", "--build", str(build), "--target", "llama-server", "llama"]
        cmd += ["-j", str(jobs or os.cpu_count() or 2)]
        log(f"building llama-server {plan.key} (several minutes) ...")
        tail: list[str] = []
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            assert proc.stdout is not None
            interactive = sys.stdout.isatty()
            last_shown = -1
            for line in proc.stdout:
                tail = (tail + [line.rstrip()])[-40:]
                match = NINJA_PROGRESS_RE.match(line)
                if not match:
                    continue
                done, total = int(match.group(1)), int(match.group(2))
                if interactive:
                    sys.stdout.write("\r" + _progress_bar(done, total))
                    sys.stdout.flush()
                elif done * 10 // total != last_shown:
                    last_shown = done * 10 // total
                    log(_progress_bar(done, total))
            if interactive:
                sys.stdout.write("\n")
        if proc.returncode != 0:
            raise RuntimeError("llama-server build failed:\n" + "\n".join(tail))
        lib_dir = plan.install_dir / "lib"
        lib_dir.mkdir(parents=True, exist_ok=True)
        for lib in (build / "bin").glob("lib*.so*"):
            shutil.copy2(lib, lib_dir / lib.name, follow_symlinks=True)
        plan.server_binary.parent.mkdir(parents=True, exist_ok=True)
        staged = plan.server_binary.with_suffix(".partial")
        shutil.copy2(build / "bin" / "llama-server", staged)
        staged.rename(plan.server_binary)
    (plan.install_dir / "build-info.json").write_text(
        json.dumps({"version": plan.version, "backend": plan.backend, "cmake_flags": plan.cmake_flags}, indent=2)
    )
    log(f"llama-server ready: {plan.server_binary}")
    return plan.server_binary


def main(argv: list[str] | None = None) -> int:
    """`python -m jupyter_modeldeploy.engines.llamacpp_install [--force] [--backend cpu|cuda]`."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--backend", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--print-path", action="store_true", help="print the cached binary's path and exit")
    parser.add_argument("--source", type=Path, help="build from this llama.cpp source tree (no download)")
    parser.add_argument("--cuda-arch", help="CMAKE_CUDA_ARCHITECTURES for a CUDA build (e.g. 90): those only")
    parser.add_argument("--jobs", type=int, help="parallel compile jobs (default: all cores)")
    args = parser.parse_args(argv)
    if args.print_path:
        found = find_llama_server()
        if found is None:
            return 1
        print(found)
        return 0
    plan = plan_build(backend=args.backend, cuda_architectures=args.cuda_arch)
    build_llama_server(plan, force=args.force, source=args.source, jobs=args.jobs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
