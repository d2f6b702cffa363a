"""The `share_with` section: which JupyterHub users and groups may get a personal key, and what that key holds.

A teammate named here (or in a group named here) gets a key of their own through the Hub's share
page; the key carries the role, models, priority and quotas set here, and is attributed to their
Hub name. Outside a Hub the section does nothing.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from .base import StrictModel
from .quotas import KeyQuotaOptions

# JupyterHub's names are normalised lower case; e-mail-like names are common.
HUB_NAME_PATTERN = r"^[a-z0-9][a-z0-9._@+-]{0,127}$"
HubName = Annotated[str, Field(pattern=HUB_NAME_PATTERN)]
MAX_NAMES = 512


class ShareOptions(StrictModel):
    """Who may get a personal key through the Hub, and the role, models, priority and quotas it carries."""

    users: list[HubName] = Field([], max_length=MAX_NAMES, description="Hub user names.")
    groups: list[HubName] = Field([], max_length=MAX_NAMES, description="Hub group names; their members may get a key.")
    role: Literal["inference", "read"] = Field("inference", description="What a shared key may do.")
    models: list[str] | None = Field(None, description="Models a shared key may call; empty: every model.")
    priority: Literal["interactive", "batch"] = Field("interactive", description="A shared key's place in the queue.")
    quotas: KeyQuotaOptions = Field(KeyQuotaOptions(), description="Each shared key's own quotas.")

    @field_validator("users", "groups", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        if isinstance(value, list):
            return list(dict.fromkeys(v.strip().lower() if isinstance(v, str) else v for v in value))
        return value

    @field_validator("models")
    @classmethod
    def _some_models(cls, value: list[str] | None) -> list[str] | None:
        return value or None

    @property
    def anyone(self) -> bool:
        """Whether it names anybody at all."""
        return bool(self.users or self.groups)

    def allows(self, user: str, groups: list[str] | tuple[str, ...]) -> bool:
        """Whether a Hub user, a member of `groups`, may hold a key."""
        return user in self.users or any(group in self.groups for group in groups)
