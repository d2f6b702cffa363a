"""The versioned state feed: what the server publishes to the gateway worker, as changes since the last version.

`StateFeed.changes()` compares each deployment's view and each key with what was last published
and returns only what differs (or None); `snapshot()` is everything, for a worker that just
started. The server publishes a change when a signal says something changed (a deployment's
state or models, a key created, changed or revoked), before every REST answer, and on its ticker,
so a change that reduces a caller's rights is in the worker's queue before the REST call that made
it returns (see `channel`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..supervisor import Deployment
from .quotas import QuotaBook
from .relay.protocol import State
from .tokens import TokenInfo
from .view import DeploymentView, KeyView, view_of


class StateFeed:
    """Views of the server's deployments and keys, and the version last published."""

    def __init__(self, deployments: Callable[[], Iterable[Deployment]],
                 keys: Callable[[], Iterable[tuple[str, TokenInfo]]]):
        self._deployments = deployments
        self._keys = keys
        self.version = 0
        self._views: dict[str, DeploymentView] = {}
        self._sent_keys: dict[str, KeyView] = {}

    def _current(self) -> tuple[dict[str, DeploymentView], dict[str, KeyView]]:
        views = {dep.id: view_of(dep) for dep in self._deployments()}
        keys = {digest: KeyView(digest, info) for digest, info in self._keys()}
        return views, keys

    def snapshot(self, quotas: QuotaBook) -> State:
        """Everything, as a new version (what was published before no longer counts), with the quota counts."""
        self._views, self._sent_keys = self._current()
        self.version += 1
        return State(self.version, tuple(self._views.values()), keys=tuple(self._sent_keys.values()), full=True,
                     quotas=quotas)

    def changes(self) -> State | None:
        """What changed since the last version, as the next one; None when nothing did."""
        views, keys = self._current()
        changed = tuple(v for i, v in views.items() if self._views.get(i) != v)
        removed = tuple(i for i in self._views if i not in views)
        new_keys = tuple(k for d, k in keys.items() if not k.same(self._sent_keys.get(d)))
        dropped = tuple(d for d in self._sent_keys if d not in keys)
        if not (changed or removed or new_keys or dropped):
            return None
        self._views, self._sent_keys = views, keys
        self.version += 1
        return State(self.version, changed, removed, new_keys, dropped)
