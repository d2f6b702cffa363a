"""The gateway worker's state: the views the server published, its own counters, and its reports to the server.

Admission in the worker reads only what the server published (`State`): deployments as views,
generated keys by hash. Before each admission the handler calls `settle()`, which applies every
frame already in the channel, so a change the server published before its REST call returned is in
force for any request sent after. The worker is the only process counting endpoint requests while
it serves (each deployment's in-flight count, each key's quota book): limits hold because one
process counts. What it counts goes back to the server (`Started`, `Finished`) through the `Outbox`,
in batches; a reader of counts there asks for them first (`Sync`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Callable
from typing import Any

from ...keys import hash_key
from ...supervisor.replicas import LOCAL_REPLICA, Replica, set_down
from ..core import GatewayConfig, GatewayCore
from ..records import RequestRecord
from ..tokens import TokenInfo
from ..view import DeploymentView
from ..waiting_line import WaitingLine
from .outbox import Outbox
from .protocol import Finished, Queued, ReplicaLoad, Started, State, Unreachable, Wake


class WorkerGateway(GatewayCore):
    """The worker's side of `GatewayCore`."""

    def __init__(self, config: GatewayConfig, outbox: Outbox, settle: Callable[[], None]):
        super().__init__(config)
        self._outbox = outbox
        self._settle = settle
        self.version = 0
        self.deployments: dict[str, DeploymentView] = {}
        self._by_route: dict[str, DeploymentView] = {}
        self._keys: dict[str, TokenInfo] = {}  # by hash
        self._waking: dict[str, asyncio.Future[None]] = {}  # deployments a wake was asked for, until `Woken`
        # A request's slot given back, reported with its record when one follows in the same step (the
        # handler releases, then records), else on its own at the end of the loop's turn.
        self._release: Finished | None = None
        self._loop = asyncio.get_running_loop()  # (asked once: each call of get_running_loop costs a getpid)

    # The state the server publishes -----------------------------------------------------------

    def apply(self, state: State) -> None:
        """Take a state change (or, `full`, a whole state) from the server."""
        if state.full:
            self._keys.clear()
            kept = {v.id for v in state.deployments}
            for gone in [d for d in self.deployments if d not in kept]:
                self._remove(gone)
            if state.quotas is not None:
                self.quotas = state.quotas  # what the server counted so far (its own, and earlier workers')
        for view in state.deployments:
            current = self.deployments.get(view.id)
            if current is None:
                self.deployments[view.id] = current = view
            else:
                current.update(view)
            self._index()
        for deployment_id in state.removed:
            self._remove(deployment_id)
        for key in state.keys:
            self._keys[key.hash] = key.info
        for digest in state.dropped:
            self._keys.pop(digest, None)
        self.version = state.version

    def _remove(self, deployment_id: str) -> None:
        self.deployments.pop(deployment_id, None)
        self._index()
        self.woken(deployment_id)

    def _index(self) -> None:
        self._by_route = {v.route: v for v in self.deployments.values()}

    # GatewayCore ----------------------------------------------------------------------------

    def settle(self) -> None:
        self._settle()

    def by_route(self, route: str) -> DeploymentView | None:
        return self._by_route.get(route)

    def lookup(self, key: str) -> TokenInfo | None:
        return self._keys.get(hash_key(key))

    def key_belongs_elsewhere(self, key: str, dep: Any) -> bool:
        digest = hash_key(key)
        return any(v.api_key_hash is not None and hmac.compare_digest(digest, v.api_key_hash)
                   for v in self.deployments.values() if v.id != dep.id)

    def touch(self, info: TokenInfo, now: float) -> None:
        info.last_used_at = now  # the server notes it from the request's record

    def request_started(self, dep: Any, book: str | None) -> None:
        dep.in_flight += 1
        self._count(Started(dep.id, book))

    def request_finished(self, dep: Any, book: str | None, tokens: int) -> None:
        dep.in_flight = max(0, dep.in_flight - 1)
        self._flush_release()
        self._release = Finished(dep.id, None, started=True, book=book, tokens=tokens)
        self._loop.call_soon(self._flush_release)

    def _flush_release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            self._count(release)

    def _count(self, message: Started | Finished) -> None:
        """A request's start or end to the server: one that moves a key's quota book when the loop's turn ends (a
        worker that dies then loses no count the server goes on from), the others in the next batch."""
        self._outbox.put(message, soon=message.book is not None)

    def line_changed(self, deployment_id: str, line: WaitingLine) -> None:
        self._outbox.put(Queued(deployment_id, line.stats()))

    def replica_unreachable(self, dep: Any, replica: Replica, reason: str) -> None:
        set_down(replica, reason)  # out of this worker's rotation at once; the server decides what follows
        self._outbox.put(Unreachable(dep.id, replica.id, reason), now=True)

    def replica_load(self, dep: Any, replica: Replica, delta: int) -> None:
        replica.in_flight += delta
        if replica.id != LOCAL_REPLICA:  # a placed replica: the server drains it by this count when it removes it
            self._outbox.put(ReplicaLoad(dep.id, replica.id, delta), now=True)

    async def wake(self, dep: Any) -> None:
        """Ask the server to wake the deployment (once, for every request waiting on it) and wait until it
        says the wake is over (`Woken`, after the state it led to) or the deployment went."""
        waiter = self._waking.get(dep.id)
        if waiter is None:
            waiter = self._waking[dep.id] = asyncio.get_running_loop().create_future()
            self._outbox.put(Wake(dep.id), now=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), self.config.upstream_timeout_s)

    def woken(self, deployment_id: str) -> None:
        """The server's wake ended: every request waiting on it is admitted again."""
        waiter = self._waking.pop(deployment_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def observe(self, record: RequestRecord, *, claimed: bool) -> None:
        release, self._release = self._release, None
        if release is not None and release.deployment_id == record.deployment_id:
            self._count(Finished(record.deployment_id, record, started=True, book=release.book, tokens=release.tokens))
            return
        if release is not None:
            self._count(release)
        self._count(Finished(record.deployment_id, record, started=False))
