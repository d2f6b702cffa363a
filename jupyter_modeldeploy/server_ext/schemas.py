"""Bodies of the REST API, declared once as pydantic models.

Request models are strict: a field of the wrong JSON type (a number for a name, `false` for
a project) is a 422 that names the field, never a value stored as it came. Deployment
configurations have their own models in `config/`.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config import field_errors
from .jsonbody import BodyError

Model = TypeVar("Model", bound=BaseModel)
Text = Annotated[str, Field(min_length=1, max_length=200)]


class RequestBody(BaseModel):
    """Base of request bodies: exact JSON types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


class FieldError(BaseModel):
    """One problem with one field of a request."""

    field: str = Field(description="dotted path, e.g. models.0.pooling; (root) for the body itself")
    message: str
    allowed: list[Any] | None = None


class ErrorBody(BaseModel):
    """Every error answer of the API (4xx and 5xx)."""

    error: str = Field(description="one-line message")
    errors: list[FieldError] | None = Field(None, description="the fields at fault, when there are any")


class CloneRequest(RequestBody):
    """POST /deployments/{ref}/clone."""

    name: Text = Field(description="name of the new deployment")
    overrides: dict[str, Any] = Field(default_factory=dict, description="configuration fields to change")
    launch: bool = Field(True, description="start it at once (false: stored stopped)")


class AdapterRequest(RequestBody):
    """POST /deployments/{ref}/adapters."""

    name: Text = Field(description="model name the adapter is served under")
    path: Annotated[str, Field(min_length=1, max_length=4096)] = Field(description="adapter folder or hub repo")


class TokenRequest(RequestBody):
    """POST /tokens: a token scoped to exactly one deployment or one project."""

    deployment: Text | None = Field(None, description="deployment id or name")
    project: Text | None = Field(None, description="project name")
    name: Text | None = Field(None, description="a label for the token")
    expires_in_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        None, description="lifetime in seconds (empty: no expiry)"
    )

    @model_validator(mode="after")
    def _one_scope(self) -> TokenRequest:
        if (self.deployment is None) == (self.project is None):
            raise ValueError("a token is scoped to exactly one of: deployment, project")
        return self


def parse_body(model: type[Model], data: Any) -> Model:
    """Validate parsed JSON against a request model; BodyError (422) names every wrong field."""
    if not isinstance(data, dict):
        message = "the request body must be a JSON object"
        raise BodyError(422, message, [{"field": "(root)", "message": message}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise BodyError(422, f"invalid request: {summary}", errors) from None
