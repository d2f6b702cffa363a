"""Replicas as Ray actors: the connection to the cluster, and starting, watching and ending actors.

Ray does the placing (each actor asks for the replica's resources, label selector and
accelerator type; Ray picks the node, and its autoscaler adds nodes when none fits) and the
restarting (`max_restarts=-1`: an actor whose node is lost or whose engine exits comes back on
a node that fits). Actors are detached and named `md-<deployment>-<replica>` in one namespace,
so a restarted Jupyter server finds and re-attaches them. Ray is imported only here, and only
when a deployment targets it (`pip install 'jupyter-modeldeploy[ray]'`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from ..config.placement import PlacementSpec

ACTOR_PREFIX = "md-"
CALL_TIMEOUT_S = 5.0
MAX_RESTARTS = 3  # a replica whose engine keeps failing ends; the run replaces it, up to its own limit

log = logging.getLogger(__name__)


class ClusterUnavailable(RuntimeError):
    """The Ray cluster cannot be reached (or Ray is not installed); the message says which and how to fix it."""


@dataclass(frozen=True)
class RaySettings:
    """Server-wide Ray settings (traitlets of the extension app)."""

    address: str = "auto"  # 'auto', 'host:port', 'ray://host:10001'
    namespace: str = "modeldeploy"
    reattach: bool = True  # keep Ray deployments running across Jupyter server restarts, and re-attach them
    runtime_env: dict[str, Any] = field(default_factory=dict)  # how nodes get this package and engines
    connect_timeout_s: float = 60.0


def actor_prefix(deployment_id: str) -> str:
    """The name prefix of a deployment's replica actors."""
    return f"{ACTOR_PREFIX}{deployment_id}-"


class RayCluster:
    """This process's connection to one Ray cluster (Ray allows one driver connection per process)."""

    def __init__(self, settings: RaySettings):
        self.settings = settings
        self._address: str | None = None
        self._lock = threading.Lock()
        self._actor_class: Any = None

    @property
    def connected_to(self) -> str | None:
        """The address this process is connected to, if any."""
        return self._address

    async def connect(self, address: str | None) -> None:
        """Connect (once) to the cluster at `address` (None: the server's setting); ClusterUnavailable if not possible."""
        wanted = address or self.settings.address
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, self._connect, wanted), self.settings.connect_timeout_s)
        except asyncio.TimeoutError:
            raise ClusterUnavailable(
                f"no Ray cluster answered at {wanted!r} within {self.settings.connect_timeout_s:g} s"
            ) from None

    def _connect(self, address: str) -> None:
        with self._lock:
            if self._address is not None:
                if address not in (self._address, "auto"):
                    raise ClusterUnavailable(
                        f"this Jupyter server is connected to the Ray cluster at {self._address!r}; one server drives one "
                        f"cluster, so {address!r} cannot be used (set ModelDeployApp.ray_address, or leave "
                        "placement.ray_address empty)"
                    )
                return
            _check_reachable(address)
            try:
                import ray
            except ImportError:
                raise ClusterUnavailable(
                    "Ray is not installed in the Jupyter server's environment: pip install 'jupyter-modeldeploy[ray]'"
                ) from None
            try:
                ray.init(
                    address=address, namespace=self.settings.namespace, log_to_driver=False,
                    runtime_env=self.settings.runtime_env or None, ignore_reinit_error=True,
                    configure_logging=False,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ClusterUnavailable(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
            from .replica_actor import EngineReplica

            self._actor_class = ray.remote(EngineReplica)
            self._address = address

    # Actors ------------------------------------------------------------------------------

    def create(self, name: str, spec: dict[str, Any], placement: PlacementSpec) -> Any:
        """Create a replica actor with the placement's resources (Ray schedules it when they are free)."""
        res = placement.resources
        options: dict[str, Any] = {
            "name": name, "namespace": self.settings.namespace, "lifetime": "detached",
            "max_restarts": MAX_RESTARTS, "max_task_retries": 0, "max_concurrency": 8,
            "num_cpus": res.cpus, "num_gpus": res.gpus,
        }
        if res.custom:
            options["resources"] = dict(res.custom)
        if res.memory_gib:
            options["memory"] = int(res.memory_gib * (1 << 30))
        if res.accelerator_type:
            options["accelerator_type"] = res.accelerator_type
        if res.node_labels:
            options["label_selector"] = dict(res.node_labels)
        return self._actor_class.options(**options).remote(spec)

    def named(self, deployment_id: str) -> dict[str, Any]:
        """The live replica actors of a deployment, by name (for re-attaching)."""
        import ray

        prefix = actor_prefix(deployment_id)
        found = {}
        for name in ray.util.list_named_actors(all_namespaces=False):
            if isinstance(name, str) and name.startswith(prefix):
                try:
                    found[name] = ray.get_actor(name, namespace=self.settings.namespace)
                except ValueError:  # gone between the list and the lookup
                    continue
        return found

    async def release_left(self, deployment_ids: set[str]) -> None:
        """End the replicas a previous server left running, for deployments not to be re-attached."""
        try:
            await self.connect(None)
        except ClusterUnavailable as exc:
            log.warning("cannot end the Ray replicas left by the previous server: %s", exc)
            return
        loop = asyncio.get_running_loop()
        for dep_id in deployment_ids:
            for actor in (await loop.run_in_executor(None, self.named, dep_id)).values():
                self.kill(actor)

    @staticmethod
    def dead_nodes() -> set[str]:
        """The ids of the cluster's nodes Ray reports dead (a lost node, once its health checks failed)."""
        import ray

        return {str(n.get("NodeID")) for n in ray.nodes() if not n.get("Alive", True)}

    @staticmethod
    def kill(actor: Any) -> None:
        """End an actor for good (no restart)."""
        import ray

        try:
            ray.kill(actor, no_restart=True)
        except (ValueError, ray.exceptions.RayError):
            return

    @staticmethod
    async def call(actor: Any, method: str, *args: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        """Call an actor method; RayCallFailed when the actor is dead, restarting, or slower than `timeout`."""
        import ray

        try:
            return await asyncio.wait_for(getattr(actor, method).remote(*args), timeout)
        except asyncio.TimeoutError:
            raise RayCallFailed(f"{method}: no answer within {timeout:g} s", restarting=True) from None
        except ray.exceptions.ActorUnavailableError:
            raise RayCallFailed(f"{method}: the replica is restarting", restarting=True) from None
        except ray.exceptions.ActorDiedError as exc:
            raise RayCallFailed(f"the replica ended for good after {MAX_RESTARTS} restarts ({_died(exc)})",
                                restarting=False) from None
        except ray.exceptions.RayActorError as exc:
            raise RayCallFailed(f"{method}: the replica died ({_first_line(exc)})", restarting=True) from None
        except ray.exceptions.RayTaskError as exc:
            raise RayCallFailed(_task_message(exc), restarting=False) from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A cluster address that nothing answers on fails at once (Ray itself would retry for minutes)."""
    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnavailable(f"{address!r} is not a Ray address (host:port or ray://host:port)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return
    except OSError as exc:
        raise ClusterUnavailable(f"no Ray cluster answers at {address!r}: {exc.strerror or exc}") from None


class RayCallFailed(RuntimeError):
    """An actor call that failed; `restarting`: Ray may bring the actor back (a lost node, a crashed engine)."""

    def __init__(self, message: str, *, restarting: bool):
        super().__init__(message)
        self.restarting = restarting


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _died(exc: BaseException) -> str:
    """Why Ray says an actor died, without its long advice."""
    text = str(exc)
    for marker in ("The actor died because of an error raised in its creation task", "The actor is dead because",
                   "The actor died unexpectedly", "owner has died", "node"):
        at = text.find(marker)
        if at >= 0:
            return text[at:at + 200].splitlines()[0]
    return _first_line(exc)


def _task_message(exc: Any) -> str:
    """The message of the exception an actor method raised (not Ray's traceback wrapper)."""
    cause = getattr(exc, "cause", None)
    return _first_line(cause) if cause is not None else _first_line(exc)


def new_replica_name(deployment_id: str) -> str:
    """A fresh actor name for one of the deployment's replicas."""
    return f"{actor_prefix(deployment_id)}{secrets.token_hex(3)}"
