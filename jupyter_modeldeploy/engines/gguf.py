"""Read a GGUF file's header (its metadata key-values), never its tensors.

The layout (GGUF v2/v3): magic `GGUF`, version (u32), tensor count (u64), key-value count
(u64), then each key (string) with a type tag (u32) and its value. Arrays are skipped
without building them (the tokenizer's vocabulary is one), so reading is fast and small.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

from .base import ModelFileUnreadable

MAGIC = b"GGUF"
# type tag -> struct format of the scalar
SCALARS: dict[int, str] = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
MAX_STRING = 1 << 24  # a header string longer than this is damage, not metadata


class NotGGUF(ModelFileUnreadable):
    """The file is not a GGUF file this reader understands."""


def _read(handle: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize("<" + fmt)
    data = handle.read(size)
    if len(data) != size:
        raise NotGGUF("the header ends early")
    return struct.unpack("<" + fmt, data)[0]


def _string(handle: BinaryIO) -> str:
    length = _read(handle, "Q")
    if length > MAX_STRING:
        raise NotGGUF("a header string is implausibly long")
    return handle.read(length).decode("utf-8", errors="replace")


def _value(handle: BinaryIO, tag: int) -> Any:
    if tag in SCALARS:
        return _read(handle, SCALARS[tag])
    if tag == STRING:
        return _string(handle)
    if tag == ARRAY:
        item, count = _read(handle, "I"), _read(handle, "Q")
        if item in SCALARS:
            handle.seek(struct.calcsize("<" + SCALARS[item]) * count, 1)
        elif item == STRING:
            for _ in range(count):
                handle.seek(_read(handle, "Q"), 1)
        else:
            raise NotGGUF(f"an array of type {item} is not supported")
        return {"array_length": count}
    raise NotGGUF(f"unknown metadata type {tag}")


def read_metadata(path: Path) -> dict[str, Any]:
    """The file's metadata key-values (arrays as `{"array_length": n}`)."""
    with path.open("rb") as handle:
        if handle.read(4) != MAGIC:
            raise NotGGUF(f"{path.name} is not a GGUF file")
        version = _read(handle, "I")
        if version < 2:
            raise NotGGUF(f"GGUF version {version} is too old")
        _tensors, count = _read(handle, "Q"), _read(handle, "Q")
        metadata: dict[str, Any] = {"gguf.version": version}
        for _ in range(count):
            key = _string(handle)
            metadata[key] = _value(handle, _read(handle, "I"))
    return metadata


def data_offset(path: Path) -> int:
    """Where the tensor data begins: the header (metadata and tensor infos), padded to `general.alignment`.

    Everything before it is the model's description; what follows is weights only."""
    with path.open("rb") as handle:
        if handle.read(4) != MAGIC:
            raise NotGGUF(f"{path.name} is not a GGUF file")
        if _read(handle, "I") < 2:
            raise NotGGUF("GGUF version is too old")
        tensors, count = _read(handle, "Q"), _read(handle, "Q")
        alignment = 32
        for _ in range(count):
            key = _string(handle)
            value = _value(handle, _read(handle, "I"))
            if key == "general.alignment":
                alignment = int(value)
        for _ in range(tensors):
            _string(handle)
            dims = _read(handle, "I")
            handle.seek(8 * dims + 4 + 8, 1)  # the dimensions, the type, the offset
        end = handle.tell()
    return -(-end // alignment) * alignment


def architecture(metadata: dict[str, Any]) -> dict[str, int]:
    """The numbers a memory estimate needs, from `<arch>.*` keys (0 where the file has none)."""
    arch = metadata.get("general.architecture", "llama")

    def get(name: str, default: int = 0) -> int:
        value = metadata.get(f"{arch}.{name}", default)
        return int(value) if isinstance(value, (int, float)) else default

    n_embd = get("embedding_length")
    n_head = get("attention.head_count", 1) or 1
    n_head_kv = get("attention.head_count_kv", n_head) or n_head
    head_dim = n_embd // n_head if n_head else 0
    vocab = metadata.get("tokenizer.ggml.tokens", {})
    return {
        "n_layer": get("block_count"),
        "n_embd": n_embd,
        "n_ff": get("feed_forward_length"),
        "n_head": n_head,
        "n_head_kv": n_head_kv,
        "key_length": get("attention.key_length", head_dim),
        "value_length": get("attention.value_length", head_dim),
        "n_ctx_train": get("context_length"),
        "n_vocab": int(vocab.get("array_length", 0)) if isinstance(vocab, dict) else 0,
    }
