"""The `api_key_quotas` section: limits on a deployment's fixed `api_key`, as generated keys have their own."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import StrictModel

Limit = Annotated[int, Field(ge=1, le=10**12)]


class KeyQuotaOptions(StrictModel):
    """Quotas of the fixed key; each left empty is no limit. Past one: 429 with Retry-After."""

    requests_per_minute: Limit | None = Field(None, description="Requests in any 60 s.")
    tokens_per_minute: Limit | None = Field(None, description="Prompt + completion tokens in any 60 s.")
    max_in_flight: Limit | None = Field(None, description="Requests with this key in flight at once.")
    daily_tokens: Limit | None = Field(None, description="Prompt + completion tokens per UTC day.")

    def limits(self) -> dict[str, int]:
        """The quotas that are set."""
        return {name: value for name in QUOTA_FIELDS if (value := getattr(self, name)) is not None}


QUOTA_FIELDS = tuple(KeyQuotaOptions.model_fields)
