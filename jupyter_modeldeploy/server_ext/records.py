"""The JSON record of a deployment that the REST API returns, and what a user may do with it now."""

from __future__ import annotations

import time
from typing import Any

from ..config import export_config
from ..supervisor import Deployment, Status
from .failure_summary import reason_parts
from .schemas import DeploymentRecord
from .test_command import test_command, test_request


def endpoint_url(public_base: str, route: str) -> str:
    """The deployment's endpoint under the Jupyter server."""
    return f"{public_base.rstrip('/')}/modeldeploy/endpoints/{route}"


def allowed_actions(dep: Deployment) -> list[str]:
    """What a user may do with the deployment now (every view shows these, none re-derives them)."""
    if not dep.status.live:
        return ["relaunch", "delete", "clone", "export", "logs"]  # a running deployment is stopped first
    return ([] if dep.status.value == "stopping" else ["stop"]) + ["clone", "export", "logs"]


def deployment_record(dep: Deployment, public_base: str, metrics: Any = None) -> dict[str, Any]:
    """Everything a client shows about a deployment; never a secret (shaped by `schemas.DeploymentRecord`)."""
    return DeploymentRecord.model_validate(_record_fields(dep, public_base, metrics)).model_dump(mode="json")


def _record_fields(dep: Deployment, public_base: str, metrics: Any) -> dict[str, Any]:
    url = endpoint_url(public_base, dep.route)
    api_base = f"{url}/v1"
    now = time.time()
    live_serving = dep.status.answering
    models = dep.models
    model_states = metrics.model_states(dep) if metrics is not None and hasattr(metrics, "model_states") else {}
    notes = list(dep.plan.notes) if dep.plan else []
    totals = metrics.totals(dep) if metrics is not None and hasattr(metrics, "totals") else {}
    notices = dep.config.notices()
    return {
        "id": dep.id,
        "name": dep.name,
        "kind": dep.kind,
        "project": dep.config.project,
        "model": export_config(dep.config).get("model"),
        "models": [
            {
                "name": m,
                "state": model_states.get(m, {}).get("state", "on_device" if live_serving else None),
                "swaps": model_states.get(m, {}).get("swaps", 0),
                "swap_seconds": model_states.get(m, {}).get("swap_seconds"),
                "endpoint": f"{url}/{m}/v1",
                "task": dep.model_tasks.get(m, "chat"),
                "test_command": test_command(test_request(dep, api_base, model=m)),
            }
            for m in models
        ],
        "status": dep.status.value,
        "live": dep.status.live,
        "serving": dep.status.serving,
        "actions": allowed_actions(dep),
        "status_reason": dep.status_reason,
        "status_summary": (parts := reason_parts(dep.status_reason))[0],
        "status_details": parts[1],
        "status_history": dep.history,
        "progress": dep.progress.to_json(time.time()) if dep.progress and dep.status is Status.LOADING else None,
        "created_at": dep.created_at,
        "started_at": dep.started_at,
        "stopped_at": dep.stopped_at,
        "last_activity_at": dep.last_activity_at,
        "idle_for_s": round(now - dep.last_activity_at, 3) if live_serving and dep.in_flight == 0 else 0.0,
        "requests_in_flight": dep.in_flight,
        "queue": {**EMPTY_QUEUE, **dep.queue},
        "requests_total": totals.get("requests", 0),
        "exit_code": dep.exit_code,
        "pid": dep.process.pid if dep.process is not None else None,
        "route": dep.route,
        "endpoint_url": url,
        "api_base": api_base,
        "test_request": (request := test_request(dep, api_base)),
        "test_command": test_command(request),
        "public": dep.config.public,
        "has_api_key": dep.api_key_hash is not None,
        "engine": {"program": _program(dep), "notes": notes},
        "notices": notices,
        "placement": dep.config.placement.target,
        "replicas": [r.describe() for r in dep.replicas],
        "replica_events": [e.describe() for e in dep.replica_events],
        "config": export_config(dep.config),
    }


EMPTY_QUEUE = {"depth": 0, "served": 0, "rejected": 0, "wait_s_total": 0.0, "mean_wait_s": 0.0}


def _program(dep: Deployment) -> str | None:
    if not dep.plan:
        return None
    argv = dep.plan.argv
    if len(argv) > 2 and argv[1] == "-m":
        return argv[2]
    return argv[0].rsplit("/", 1)[-1]
