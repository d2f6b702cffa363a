"""What goes with a deleted deployment: its jupyter-ai models and the key made for them, then every key
scoped to it. A listener of the supervisor's changes (`supervisor.signals`), connected at start-up."""

from __future__ import annotations

import logging

from ..gateway.tokens import TokenRegistry
from ..supervisor.signals import DeploymentChange
from .jupyter_ai_handlers import forget

log = logging.getLogger(__name__)


def clean_up_after_delete(tokens: TokenRegistry, change: DeploymentChange) -> None:
    """On `deleted`: the deployment's jupyter-ai entries (their key revoked), then its keys dropped from the index."""
    if change.kind != "deleted":
        return
    dep = change.deployment
    try:
        forget(tokens, dep)
    except (OSError, ValueError) as exc:
        log.warning("modeldeploy: jupyter-ai models of %s left in place: %s", dep.name, exc)
    tokens.forget_deployment(dep.id)
