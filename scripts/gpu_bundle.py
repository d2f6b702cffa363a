"""`make gpu-bundle`: the GPU acceptance kit's bundle (scripts/gpu_kit/bundle.py; docs/gpu-check.md)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.gpu_kit.bundle import main

if __name__ == "__main__":
    raise SystemExit(main())
