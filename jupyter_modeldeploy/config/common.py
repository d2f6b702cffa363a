"""Fields shared by every deployment kind, and the helper that declares a form field.

Every option is declared once here or in a kind's module; forms, docs, JSON Schema and
engine command lines are all derived from these models.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from .base import StrictModel
from .placement import PlacementSpec
from .quotas import KeyQuotaOptions
from .sharing import ShareOptions
from .warm_hours import WarmWindow

SCHEMA_VERSION = 1

def check_home(path: str) -> str:
    """Refuse a path that starts with `~user` when this server knows no such user.

    Such a path can never be found; let the field say so rather than the engine fail later.
    """
    head = path.split("/", 1)[0]
    if head.startswith("~") and os.path.expanduser(head) == head:
        raise ValueError(f"{head!r}: no such user's home directory on this server")
    return path


#: Form groups, in the order a form shows them.
GROUP_ORDER: tuple[str, ...] = (
    "Instance",
    "Model",
    "LoRA",
    "Models",
    "Sampling defaults",
    "Context",
    "YaRN",
    "Performance",
    "GPUs",
    "Placement",
    "General",
    "Idle",
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
ROUTE_PATTERN = r"^$|^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def option(default: Any = ..., *, group: str, description: str, **kwargs: Any) -> Any:
    """Declare a launch-form option: a pydantic field tagged with its form group."""
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra["group"] = group
    return Field(default, description=description, json_schema_extra=extra, **kwargs)


class DeploymentBase(StrictModel):
    """The options every deployment kind has: instance, secrets, memory and idle policy."""

    schema_version: Literal[1] = Field(
        SCHEMA_VERSION,
        description="Version of this configuration format; bumped when fields change meaning.",
        json_schema_extra={"group": "Instance", "readOnly": True},
    )

    # Instance
    name: str = option(
        ...,
        group="Instance",
        description="Name shown in lists; unique among live deployments.",
        pattern=NAME_PATTERN,
    )
    project: str = option(
        "default",
        group="Instance",
        description="Service project this deployment belongs to; tokens can be scoped to it.",
        pattern=NAME_PATTERN,
    )
    placement: PlacementSpec = option(
        PlacementSpec(),
        group="Placement",
        description="Where it runs: 'local' (one engine on this host) or 'ray' (replicas on a Ray cluster, "
        "with resources per replica and autoscaling).",
    )
    gpus: Literal["auto"] | list[int] = option(
        "auto",
        group="Instance",
        description="GPU indices to use: 'auto' (all visible, or CPU when none) or a list such as [0, 1].",
    )
    route: str = option(
        "",
        group="Instance",
        description="Fixed endpoint path segment; empty gives an ephemeral random route.",
        pattern=ROUTE_PATTERN,
    )

    # General
    hf_token: SecretStr | None = option(
        None,
        group="General",
        description="Hugging Face token, passed to the engine as HF_TOKEN; never exported or logged.",
        json_schema_extra={"format": "password", "writeOnly": True, "secret": True},
    )
    api_key: SecretStr | None = option(
        None,
        group="General",
        description="Fixed API key the endpoint accepts (generated tokens work too).",
        json_schema_extra={"format": "password", "writeOnly": True, "secret": True},
    )
    api_key_quotas: KeyQuotaOptions = option(
        KeyQuotaOptions(),
        group="General",
        description="Quotas of the fixed api_key (requests and tokens per minute, in flight, tokens per day); "
        "generated keys carry their own.",
    )
    share_with: ShareOptions = option(
        ShareOptions(),
        group="General",
        description="JupyterHub users and groups who may get a personal key on the Hub's share page, and the role, "
        "models, priority and quotas their keys carry; removing someone revokes their keys. Outside a Hub: unused.",
    )
    public: bool = option(
        False,
        group="General",
        description="Serve the endpoint without any key. Off by default; turn on only on purpose.",
    )
    cors_allow_origins: list[str] = option(
        ["*"],
        group="General",
        description="Browser origins that may call the endpoint (CORS), such as 'https://app.example.org'; "
        "'*' allows any (keys, not cookies, authenticate); empty: none.",
    )
    queue_size: int = option(
        64,
        group="General",
        description="Requests that wait for a slot once max_concurrent_requests are in flight, served round-robin "
        "across keys and interactive keys before batch ones; a request past them gets 429. 0: no queue.",
        ge=0, le=100_000,
    )
    queue_timeout_s: float = option(
        60.0,
        group="General",
        description="Seconds a request waits in the queue before it gets 429 (a streamed one gets SSE comments "
        "meanwhile).",
        gt=0, le=86_400,
    )
    capture_bodies: bool = option(
        False,
        group="General",
        description="Keep each request's and answer's body in the request log (secrets redacted, cut at "
        "capture_max_bytes). Off by default.",
    )
    capture_max_bytes: int = option(
        16384, group="General", description="Bytes of each body the request log keeps when capturing.", ge=256, le=1 << 20
    )
    env: dict[str, str] = option(
        {},
        group="General",
        description="Extra environment variables for the engine process.",
    )
    debug: bool = option(False, group="General", description="Verbose engine output for debugging.")
    log_level: Literal["debug", "info", "warning", "error"] = option(
        "info", group="General", description="Engine log level."
    )
    disable_logs: bool = option(
        False, group="General", description="Keep the engine's console quiet (errors only)."
    )
    cpu_offload: bool = option(
        False,
        group="General",
        description="Universal Memory: move inactive models to CPU RAM instead of unloading them.",
    )
    disk_swap: bool = option(
        False,
        group="General",
        description="Universal Memory: unload inactive models to disk and reload on demand "
        "(requires cpu_offload off).",
    )
    max_cuda_memory_gib: float | None = option(
        None,
        group="General",
        description="Memory budget for the models, in GiB; may exceed the GPU's, the surplus "
        "lives in CPU RAM. Empty: no budget.",
        gt=0,
    )
    cuda_memory_min_threshold_kb: int = option(
        0,
        group="General",
        description="Allocations smaller than this (KiB) stay on the device when offloading.",
        ge=0,
    )

    restart: Literal["never", "on-failure", "always"] = option(
        "always",
        group="General",
        description="Restart policy: 'always' brings a deployment that was serving back after the Jupyter "
        "server restarts and restarts a crashed engine; 'on-failure' only restarts a crashed engine (with "
        "back-off, giving up as failed after a crash loop); 'never' does neither.",
    )

    # Idle
    idle_time_limit_hours: float = option(
        1.0,
        group="Idle",
        description="Stop after this many hours with no request in flight and none arriving "
        "(fractions allowed, e.g. 0.001 is 3.6 s); 0 never stops.",
        ge=0,
    )
    warm_hours: list[WarmWindow] = option(
        [],
        group="Idle",
        description="Hours the deployment stays loaded whatever its idle time, in the server's time zone (each: "
        "days such as mon-fri, a start and an end such as 09:00 and 18:00): the idle limit and a Ray deployment's "
        "scale to zero act only outside them, and one found asleep when one begins is woken.",
        max_length=32,
    )
    last_action_report_interval_s: float = option(
        30.0,
        group="Idle",
        description="How often activity is reported (seconds); a deployment with no request "
        "for this long shows as idle.",
        gt=0,
    )

    @model_validator(mode="before")
    @classmethod
    def _placement_target(cls, data: Any) -> Any:
        """Configurations from before `placement` had a top-level `target`: it moves into the section."""
        if isinstance(data, dict) and "target" in data:
            data = dict(data)
            target = data.pop("target")
            placement = data.get("placement")
            if placement is None:
                data["placement"] = {"target": target}
            elif isinstance(placement, dict) and "target" not in placement:
                data["placement"] = {**placement, "target": target}
        return data

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not ENV_NAME_RE.match(k)]
        if bad:
            raise ValueError(f"not valid environment variable names: {', '.join(sorted(bad))}")
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        bad = [o for o in value if o != "*" and not ORIGIN_RE.match(o)]
        if bad:
            raise ValueError(
                f"not origins (scheme://host[:port], or '*'): {', '.join(repr(o[:80]) for o in bad[:5])}"
            )
        return value

    @field_validator("gpus")
    @classmethod
    def _gpu_indices(cls, value: Any) -> Any:
        if isinstance(value, list):
            if any(i < 0 for i in value):
                raise ValueError("GPU indices must be 0 or greater")
            if len(set(value)) != len(value):
                raise ValueError("GPU indices must not repeat")
        return value

    @model_validator(mode="after")
    def _memory_modes(self) -> DeploymentBase:
        if self.disk_swap and self.cpu_offload:
            raise ValueError("disk_swap requires cpu_offload to be off: choose one of the two")
        return self

    @property
    def idle_time_limit_s(self) -> float:
        """The idle limit in seconds (0 = never)."""
        return self.idle_time_limit_hours * 3600.0

    def notices(self) -> list[str]:
        """What the engine does with options it renamed or dropped, for the user to read (none by default)."""
        return []

    def secret_fields(self) -> list[str]:
        """Names of the fields that hold secrets."""
        return [
            name
            for name, info in type(self).model_fields.items()
            if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("secret")
        ]
