"""Which resolved packages the bundle carries: those the GPU image lacks, one version of each. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .image import normalise

# Declared dependencies a check on a GPU host does not run: the JupyterLab front end and the notebook
# widget views (the check talks to the server extension over REST). Left out of the resolution, so what
# only they pull in (ipykernel, IPython, jedi, debugpy, babel, ...) stays behind too: about 35 MB of wheels.
LEFT_OUT = frozenset({"jupyterlab", "ipywidgets", "bqplot"})


class SelectionError(ValueError):
    """The resolved set cannot be bundled as it is (two versions of one package)."""


@dataclass(frozen=True)
class Pin:
    """One resolved distribution: its normalised name and version."""

    name: str
    version: str

    @property
    def requirement(self) -> str:
        """`name==version`, as pip takes it."""
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class Selection:
    """The resolved set split into what travels and what the image already has."""

    bundled: tuple[Pin, ...]
    in_image: tuple[Pin, ...]


def pins(resolved: Iterable[tuple[str, str]]) -> list[Pin]:
    """Normalised pins; a package resolved twice at two versions is an error (pip would refuse both)."""
    seen: dict[str, Pin] = {}
    for name, version in resolved:
        pin = Pin(normalise(name), version)
        other = seen.get(pin.name)
        if other is not None and other.version != version:
            raise SelectionError(f"{pin.name} resolved at two versions: {other.version} and {version}")
        seen[pin.name] = pin
    return sorted(seen.values(), key=lambda p: p.name)


def select(resolved: Iterable[tuple[str, str]], image: frozenset[str]) -> Selection:
    """Split the resolved set: every package the image lacks is bundled, none that it has."""
    every = pins(resolved)
    return Selection(
        bundled=tuple(p for p in every if p.name not in image),
        in_image=tuple(p for p in every if p.name in image),
    )


def runtime_requirements(requires_dist: Iterable[str]) -> list[str]:
    """The project's own requirements for the GPU check: no extras' ones, none of `LEFT_OUT`."""
    out = []
    for line in requires_dist:
        requirement, _, marker = line.partition(";")
        if "extra" in marker:
            continue
        name = normalise(_name_of(requirement.strip()))
        if name not in LEFT_OUT:
            out.append(line.strip())
    return out


def _name_of(requirement: str) -> str:
    for index, char in enumerate(requirement):
        if not (char.isalnum() or char in "-_."):
            return requirement[:index]
    return requirement
