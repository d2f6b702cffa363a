"""What the lent GPU machines' image already holds: the list kept beside this file, by normalised name."""

from __future__ import annotations

import re
from pathlib import Path

IMAGE_LIST = Path(__file__).with_name("cuda-image-packages.txt")


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (`Typing_Extensions` -> `typing-extensions`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = IMAGE_LIST) -> frozenset[str]:
    """The normalised names of the image's Python packages (comments and blank lines skipped)."""
    names = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(normalise(name) for name in names if name)
