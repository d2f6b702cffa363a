"""Endpoint traffic as the Jupyter server's own activity: what JupyterHub's idle culler reads.

jupyter_server's `last_activity()` (what `/api/status` reports, and what `jupyterhub-singleuser`
sends the Hub, whose `jupyterhub-idle-culler` stops servers idle past its limit) is the latest of
its API calls, kernels, terminals and the `last_activity_times` an extension sets. Endpoint calls
come with a deployment key, not through Jupyter's API handlers, so a server busy serving its
endpoints would look idle and be culled mid-request. Every few seconds this sets its entry:

- while any deployment has a request in flight (a long completion, an open stream), the server is
  active now, whatever the setting says: a culler never stops a server under a request;
- with `endpoint_activity` (the default), the latest endpoint request counts as activity too, so
  a server whose endpoint is in use stays up; without it only Jupyter's own use keeps it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, MutableMapping
from datetime import datetime, timezone
from typing import Any

from tornado.ioloop import PeriodicCallback

ACTIVITY_KEY = "modeldeploy_endpoints"  # its entry in jupyter_server's `last_activity_times`


def endpoint_activity(deployments: Iterable[Any], *, requests_count: bool, now: float) -> float | None:
    """The time to report as the server's activity (epoch seconds), or None for none: now while a request is in
    flight; else, where requests count, the last time a deployment saw one."""
    latest: float | None = None
    for dep in deployments:
        if dep.in_flight > 0:
            return now
        if requests_count and (latest is None or dep.last_activity_at > latest):
            latest = dep.last_activity_at
    return latest


class ServerActivity:
    """Keeps the server's `last_activity_times` entry for endpoint traffic (see the module's docstring)."""

    def __init__(self, settings: MutableMapping[str, Any], supervisor: Any, settle: Any, *, requests_count: bool,
                 every_s: float):
        self._times: MutableMapping[str, datetime] = settings.setdefault("last_activity_times", {})
        self._supervisor = supervisor
        self._settle = settle  # the gateway worker's reports taken in first: its counts are the true ones
        self.requests_count = requests_count
        self._timer = PeriodicCallback(self.check, every_s * 1000)

    def start(self) -> None:
        """Check every few seconds from now on."""
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def check(self) -> None:
        """Set the entry when endpoint traffic is newer than it."""
        self._settle()
        at = endpoint_activity(self._supervisor.deployments.values(), requests_count=self.requests_count,
                               now=time.time())
        if at is None:
            return
        stamp = datetime.fromtimestamp(at, tz=timezone.utc)
        current = self._times.get(ACTIVITY_KEY)
        if current is None or stamp > current:
            self._times[ACTIVITY_KEY] = stamp
