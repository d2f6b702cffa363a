"""Read safetensors headers (the JSON index at the front of each file), never the tensors.

A file starts with an 8-byte little-endian header length, then that much JSON: per tensor
its dtype, shape and byte offsets. From it come the parameter count and the stored bytes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from .base import ModelFileUnreadable

DTYPE_BYTES: dict[str, int] = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}
MAX_HEADER = 100 * 1024 * 1024


class NotSafetensors(ModelFileUnreadable):
    """The file is not a readable safetensors file."""


@dataclass(frozen=True)
class Weights:
    """What the headers say: parameters and the bytes they take as stored."""

    parameters: int
    stored_bytes: int

    def __add__(self, other: Weights) -> Weights:
        return Weights(self.parameters + other.parameters, self.stored_bytes + other.stored_bytes)


def read_header(path: Path) -> Weights:
    """Parameters and stored bytes of one safetensors file."""
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise NotSafetensors(f"{path.name} is too short for a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER:
            raise NotSafetensors(f"{path.name}: the header length is implausible")
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            raise NotSafetensors(f"{path.name}: the header is not JSON") from None
    params = stored = 0
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        count = math.prod(int(d) for d in info.get("shape", []))
        params += count
        stored += count * DTYPE_BYTES.get(str(info.get("dtype")), 4)
    return Weights(params, stored)


def read_folder(folder: Path) -> Weights:
    """Parameters and stored bytes of every safetensors file in a model folder (sub-folders left out)."""
    total = Weights(0, 0)
    for path in sorted(folder.glob("*.safetensors")):
        total = total + read_header(path)
    return total
