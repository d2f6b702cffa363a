"""The base of every configuration model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown fields, so a typo in an import is an error."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
