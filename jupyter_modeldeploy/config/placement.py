"""Where a deployment runs and how many replicas it has: the `placement` section, the same for every kind.

`target: local` (the default) runs one engine on the notebook host. `target: ray` runs each
replica as the same engine on a node of a Ray cluster that Ray picks for the replica's
resources; the gateway on the notebook host spreads requests over the live replicas.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import StrictModel

#: `auto`, `host:port`, `ray://host:port` (Ray client), or an IPv6 form of either.
RAY_ADDRESS_RE = re.compile(r"^(auto|local|(ray://)?[A-Za-z0-9.\-\[\]:]{1,255}(:[0-9]{1,5})?)$")
RESOURCE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]{0,127}$")
LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.\-/]{0,126}[A-Za-z0-9])?$")
_VALUE = r"[A-Za-z0-9]([A-Za-z0-9_.\-/]{0,62}[A-Za-z0-9])?"
#: A label selector's value: `a`, `!a`, `in(a,b)` or `!in(a,b)` (Ray's syntax).
SELECTOR_RE = re.compile(rf"^!?({_VALUE}|in\({_VALUE}(,{_VALUE}){{0,31}}\))$")
#: Resource names Ray defines itself: set them with their own fields.
BUILT_IN_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


class ReplicaCounts(StrictModel):
    """How many replicas: `min` (0 scales to zero when idle), `max`, and how many to start with."""

    min: int = Field(1, ge=0, le=64, description="Fewest replicas; 0 scales to zero when no request comes.")
    max: int = Field(1, ge=1, le=64, description="Most replicas the autoscaler starts.")
    initial: int | None = Field(
        None, ge=0, le=64, description="Replicas at launch; empty: `min`, or 1 when `min` is 0."
    )

    @model_validator(mode="after")
    def _order(self) -> ReplicaCounts:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.initial is not None and not self.min <= self.initial <= self.max:
            raise ValueError(f"initial ({self.initial}) must lie between min ({self.min}) and max ({self.max})")
        return self

    @property
    def at_launch(self) -> int:
        """The replicas a launch starts."""
        if self.initial is not None:
            return self.initial
        return max(self.min, 1)


class ReplicaResources(StrictModel):
    """What one replica reserves on its node; Ray places it where they are free."""

    gpus: float = Field(0, ge=0, le=64, description="GPUs per replica (fractions share a GPU).")
    cpus: float = Field(1, ge=0, le=1024, description="CPUs per replica.")
    memory_gib: float | None = Field(None, gt=0, description="Host memory per replica, in GiB; empty: none reserved.")
    accelerator_type: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="Accelerator type, as Ray names it (A100, H100, L4...)."
    )
    custom: dict[str, float] = Field(
        {}, description="Custom Ray resources per replica, such as {'pool_a': 1}."
    )
    node_labels: dict[str, str] = Field(
        {}, description="Node labels a replica's node must carry (Ray label selectors): {'zone': 'a'}, "
        "{'zone': 'in(a,b)'}, {'zone': '!c'}."
    )

    @field_validator("custom")
    @classmethod
    def _custom_names(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name in BUILT_IN_RESOURCES:
                raise ValueError(f"{name!r} is set by its own field (gpus, cpus, memory_gib)")
            if not RESOURCE_NAME_RE.match(name):
                raise ValueError(f"{name[:80]!r} is not a resource name (letters, digits, '_', '.', '-', '/')")
            if amount <= 0:
                raise ValueError(f"resource {name!r} needs an amount above 0")
        return value

    @field_validator("node_labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            if not LABEL_RE.match(key) or not SELECTOR_RE.match(label):
                raise ValueError(f"{key[:80]!r}: {label[:80]!r} is not a label selector (a label of letters, digits, "
                                 "'_', '.', '-', '/'; or !label, in(a,b), !in(a,b))")
        return value


class Autoscaling(StrictModel):
    """When the replica count changes: requests in flight per replica, and how long a need must last."""

    target_in_flight: float = Field(
        2.0, gt=0, le=10_000, description="Requests in flight per replica the autoscaler aims at."
    )
    upscale_delay_s: float = Field(5.0, ge=0, le=3600, description="Seconds of load above target before adding a replica.")
    downscale_delay_s: float = Field(
        60.0, ge=0, le=86_400, description="Seconds of load below target before removing a replica."
    )


class PlacementSpec(StrictModel):
    """Where the deployment runs: this host, or a Ray cluster with replicas and autoscaling."""

    target: Literal["local", "ray"] = Field(
        "local", description="'local': one engine on this host; 'ray': replicas on a Ray cluster."
    )
    ray_address: str | None = Field(
        None,
        description="The Ray cluster for this deployment ('auto', 'host:6379', 'ray://host:10001'); "
        "empty: the server's ModelDeployApp.ray_address.",
    )
    replicas: ReplicaCounts = ReplicaCounts()
    resources: ReplicaResources = ReplicaResources()
    autoscaling: Autoscaling = Autoscaling()

    @field_validator("ray_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not RAY_ADDRESS_RE.match(value):
            raise ValueError(f"{value[:80]!r} is not a Ray address ('auto', 'host:port' or 'ray://host:port')")
        return value

    @model_validator(mode="after")
    def _local_is_one(self) -> PlacementSpec:
        if self.target == "local" and (self.replicas.max > 1 or self.replicas.min != 1 or self.replicas.initial
                                       not in (None, 1)):
            raise ValueError("target 'local' runs one replica: replicas min, max and initial must be 1 "
                             "(set target to 'ray' for more)")
        return self

    @property
    def on_ray(self) -> bool:
        """Whether the deployment runs on a Ray cluster."""
        return self.target == "ray"
