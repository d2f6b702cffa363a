"""What the steps share: the mode (GPU or --cpu), folders, the models, one Jupyter server, process readings."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from . import models

API_KEY = "sk-gpu-check-0001"


@dataclass
class Host:
    """The run's context; `cpu` is the --cpu mode (every figure from the CPU, NVML steps not applicable)."""

    cpu: bool
    bundle: Path
    out: Path
    work: Path
    model_source: str = "auto"  # "auto": the packaged models if installed, else the bundle's; or "bundle"
    llama_server: Path | None = None
    jupyter: Any = None
    minilm: Path | None = None
    smollm2: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def device(self) -> str:
        """The torch device the check's own encoding runs on."""
        return "cpu" if self.cpu else "cuda"

    def prepare_models(self) -> dict[str, str]:
        """The MiniLM folder and SmolLM2 GGUF the steps use: packaged if installed (and allowed), else rebuilt
        from the bundle (models.py); returns where each came from."""
        from .bundle import MINILM_FOLDER, SMOLLM2_HEADER

        use_packaged = self.model_source == "auto"
        minilm = models.packaged_minilm() if use_packaged else None
        smollm2 = models.packaged_smollm2() if use_packaged else None
        sources = {"minilm": "packaged", "smollm2": "packaged"}
        if minilm is None:
            minilm = models.build_minilm(self.bundle / MINILM_FOLDER, self.work / "models" / "all-MiniLM-L6-v2")
            sources["minilm"] = "architecture and tokenizer of the packaged model, weights from seed 0"
        if smollm2 is None:
            from . import manifest

            entry = next(f for f in manifest.load(self.bundle)["files"] if f["path"] == SMOLLM2_HEADER)
            smollm2 = models.build_zero_gguf(self.bundle / SMOLLM2_HEADER, entry["notes"]["full_size"],
                                             self.work / "models" / models.SMOLLM2_FILE)
            sources["smollm2"] = "header of the packaged GGUF, zero weights"
        self.minilm, self.smollm2 = minilm, smollm2
        return sources

    def start_jupyter(self) -> Any:
        """A Jupyter server with the extension (llama-server: the one built or found, if any yet)."""
        from tests.support.jupyter import JupyterProcess

        self.stop()
        # Samples every 0.5 s, so that the host sampler's GPU series catch the steps' short loads.
        extra = ["--ModelDeployApp.metrics_interval_s=0.5"]
        if self.llama_server:
            extra.append(f"--ModelDeployApp.llamacpp_server={self.llama_server}")
        server = JupyterProcess(self.work / "jupyter", extra_args=extra)
        self.jupyter = server.start(timeout=180)
        return self.jupyter

    def stop(self) -> None:
        """Stop the Jupyter server, if one runs (its engines go with it)."""
        if self.jupyter is not None:
            self.jupyter.stop()
            self.jupyter = None


def engine_pids(reaper_pid: int) -> list[int]:
    """The engine processes of a deployment: every descendant of its reaper."""
    try:
        return [p.pid for p in psutil.Process(reaper_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def gpu_bytes(pids: list[int]) -> int:
    """GPU memory NVML counts for these processes (0 without NVML)."""
    from jupyter_modeldeploy.metrics.gpu import GpuReader

    reader = GpuReader()
    try:
        per_process = reader.process_memory()
    finally:
        reader.close()
    return sum(per_process.get(pid, 0) for pid in pids)


def gpu_used() -> int:
    """GPU memory in use on every GPU, whoever holds it (0 without NVML)."""
    from jupyter_modeldeploy.metrics.gpu import GpuReader

    reader = GpuReader()
    try:
        return int(sum(s.memory_used_bytes for s in reader.read()))
    finally:
        reader.close()


def engine_gpu(pids: list[int], baseline: int) -> tuple[int, str]:
    """The engine's GPU memory and how it was read: NVML's per-process count, or, where NVML lists no such
    process (a container whose process ids it does not share), what the device holds beyond `baseline`."""
    own = gpu_bytes(pids)
    if own:
        return own, "NVML per-process memory of the engine's processes"
    return max(0, gpu_used() - baseline), "NVML device memory in use beyond what it held before the launch"


def process_env(pid: int, name: str) -> str | None:
    """One variable of a running process's environment (None if unset or unreadable)."""
    try:
        return psutil.Process(pid).environ().get(name)
    except (psutil.Error, OSError):
        return None


def versions() -> dict[str, str]:
    """Python and the packages the figures depend on, as this run imported them."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0], "machine": platform.machine()}
    for name in ("jupyter-modeldeploy", "jupyter-server", "tornado", "pydantic", "torch", "transformers",
                 "sentence-transformers", "nvidia-ml-py", "aiohttp"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    try:
        import torch

        found["cuda"] = str(torch.version.cuda)
        if torch.cuda.is_available():
            found["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return found
