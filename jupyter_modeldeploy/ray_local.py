"""A Ray cluster on this machine for trying Ray placement: `jupyter modeldeploy ray start|stop|status`.

Each node is a `ray start --block` process in its own process group, so this cluster can be
stopped (or one node of it lost, as tests do) without touching any other Ray on the machine.
Node `i` carries the custom resource `node_<i>` and the label `modeldeploy-node=<i>`, so a
deployment can pin replicas to nodes. The cluster's address and node processes are kept in
the user's cache directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from .paths import cache_root as cache_dir

STATE_FILE = "ray-local.json"
DEFAULT_PORT = 6389


class LocalClusterError(RuntimeError):
    """The local cluster cannot be started or reached; the message says why."""


@dataclass
class LocalNode:
    """One node: its `ray start --block` process (a process group) and what it offers."""

    pid: int
    resources: dict[str, float]
    labels: dict[str, str]
    num_cpus: float
    head: bool = False
    log: str = ""  # its console log


@dataclass
class LocalCluster:
    """A local multi-node Ray cluster: the head's address and every node."""

    address: str
    nodes: list[LocalNode] = field(default_factory=list)
    log_dir: str = ""

    def alive(self) -> list[LocalNode]:
        """The nodes whose process still runs."""
        return [n for n in self.nodes if _alive(n.pid)]


def _alive(pid: int) -> bool:
    """Whether a node's process runs (a killed child of this process is a zombie until reaped: not running)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def ray_executable() -> str:
    """The `ray` command of this environment."""
    here = Path(sys.executable).parent / "ray"
    found = str(here) if here.exists() else shutil.which("ray")
    if not found:
        raise LocalClusterError("Ray is not installed: pip install 'jupyter-modeldeploy[ray]'")
    return found


def _state_path() -> Path:
    return cache_dir() / STATE_FILE


def load_state() -> LocalCluster | None:
    """The cluster `start` recorded, if any."""
    try:
        data = json.loads(_state_path().read_text())
    except (OSError, ValueError):
        return None
    return LocalCluster(address=data["address"], nodes=[LocalNode(**n) for n in data["nodes"]],
                        log_dir=data.get("log_dir", ""))


def _save_state(cluster: LocalCluster) -> None:
    path = _state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(cluster), indent=2) + "\n")


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports: every socket stays bound until all are chosen (one bound and
    closed at a time, the kernel may hand the same port out twice, and Ray refuses to start a node
    whose components share one)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(1.0)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise LocalClusterError(f"the Ray head did not listen on port {port} within {timeout:g} s")


def _import_shim() -> Path:
    """A folder whose `rfc3987_syntax` refuses to import, for the nodes' PYTHONPATH.

    Every Ray process imports jsonschema, which imports the optional rfc3987-syntax when it is
    installed (Jupyter's event schemas pull it in); that module compiles a grammar at import, about
    3 s of CPU per process. A node starts half a dozen such processes at once, and Ray 2.60's raylet
    gives its agents a fixed 15 s to come up: on a small, busy machine they miss it. jsonschema treats
    the module as optional (its IRI format check is skipped), and nothing else of a node uses it.
    """
    folder = cache_dir() / "ray-local-shim"
    module = folder / "rfc3987_syntax.py"
    if not module.exists():
        folder.mkdir(parents=True, exist_ok=True)
        module.write_text('raise ImportError("left out of local Ray nodes: see jupyter_modeldeploy.ray_local")\n')
    return folder


def start_node(
    *, address: str | None, port: int, num_cpus: float, resources: dict[str, float], labels: dict[str, str],
    log_dir: Path, env: dict[str, str] | None = None,
) -> LocalNode:
    """Start one node (the head when `address` is None) as `ray start --block` in its own process group."""
    argv = [ray_executable(), "start", "--block", f"--num-cpus={num_cpus:g}", "--num-gpus=0",
            f"--resources={json.dumps(resources)}", "--disable-usage-stats"]
    # Agent ports fixed up front: left to the agents, the raylet waits for them to write their ports
    # and gives up after a few seconds on a loaded machine, where the agents start slowly.
    agent_ports = free_ports(4)
    while port in agent_ports:  # the head's own port, chosen (and released) before
        agent_ports = free_ports(4)
    grpc, listen, runtime_env, metrics = agent_ports
    argv += [f"--dashboard-agent-grpc-port={grpc}", f"--dashboard-agent-listen-port={listen}",
             f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}"]
    if labels:
        argv.append("--labels=" + ",".join(f"{k}={v}" for k, v in labels.items()))
    if address is None:
        argv += ["--head", f"--port={port}", "--include-dashboard=false"]
    else:
        argv.append(f"--address={address}")
    log_dir.mkdir(parents=True, exist_ok=True)
    name = "head" if address is None else "-".join(resources) or "node"
    log_path = log_dir / f"{name}-{int(time.time() * 1000)}.log"
    log = log_path.open("ab")
    # A loaded machine starts a node's agents slowly: give them longer than Ray's default.
    proc_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_raylet_start_wait_time_s": "180",
                "RAY_agent_register_timeout_ms": "180000",
                "RAY_enable_worker_prestart": "0", **(env or {})}
    proc_env.pop("RAY_ADDRESS", None)
    proc_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_import_shim()), proc_env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=proc_env,
                            start_new_session=True)
    return LocalNode(pid=proc.pid, resources=resources, labels=labels, num_cpus=num_cpus, head=address is None,
                     log=str(log_path))


# Counted in Ray's control store (GCS), where a node is alive from the moment its raylet registers. `ray status`
# reads the autoscaler's report instead, which a separate head process writes every few seconds and which
# says nothing at all while that process is slow or gone. Run apart: a GCS client blocks for 40 s on a
# head that does not answer, and writes its warnings to the caller's stderr.
_ALIVE_NODES_SCRIPT = """
import sys
from ray._raylet import GcsClient
from ray.core.generated.gcs_pb2 import GcsNodeInfo
infos = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=float(sys.argv[2]))
print(sum(1 for info in infos.values() if info.state == GcsNodeInfo.GcsNodeState.ALIVE))
"""


def node_count(address: str, timeout: float = 30.0) -> int:
    """How many nodes the cluster's control store has alive, 0 when it does not answer."""
    return _node_count(address, timeout)[0]


def _node_count(address: str, timeout: float) -> tuple[int, str]:
    """The count, and when there is none, what the query said instead."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    try:
        out = subprocess.run([sys.executable, "-c", _ALIVE_NODES_SCRIPT, address, str(timeout / 2)],
                             capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return 0, f"the cluster's control store did not answer within {timeout:g} s"
    lines = out.stdout.strip().splitlines()
    if out.returncode == 0 and lines and lines[-1].isdigit():
        return int(lines[-1]), ""
    return 0, (out.stderr.strip().splitlines() or ["no answer"])[-1][:300]


def wait_for_nodes(address: str, count: int, timeout: float = 120.0,
                   nodes: list[LocalNode] | None = None) -> None:
    """Wait until `count` nodes are alive; sooner a LocalClusterError when one of `nodes` exited."""
    deadline = time.monotonic() + timeout
    seen, said = 0, ""
    while time.monotonic() < deadline:
        seen, said = _node_count(address, min(30.0, max(deadline - time.monotonic(), 5.0)))
        if seen >= count:
            return
        gone = [n for n in nodes or [] if not _alive(n.pid)]
        if gone:
            raise LocalClusterError(f"a Ray node exited while starting{_log_tail(gone[0])}")
        time.sleep(1.0)
    raise LocalClusterError(f"{seen} of {count} Ray nodes came up within {timeout:g} s"
                            + (f" (the cluster said: {said})" if said else "")
                            + "".join(_log_tail(n) for n in nodes or [] if not n.head))


def _log_tail(node: LocalNode, lines: int = 8) -> str:
    """The end of a node's console log, for an error message."""
    try:
        tail = Path(node.log).read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return f"; its log ({node.log}) ends:\n" + "\n".join(tail)


def start(*, nodes: int = 2, cpus_per_node: float = 1, port: int = DEFAULT_PORT, log_dir: Path | None = None,
          head_cpus: float = 0, record: bool = True) -> LocalCluster:
    """A head (no CPUs by default: replicas go to the worker nodes) and `nodes` worker nodes.

    `record`: kept in the cache directory for `status` and `stop` (tests keep their clusters to themselves).
    """
    existing = load_state() if record else None
    if existing is not None and existing.alive():
        raise LocalClusterError(f"a local cluster already runs at {existing.address}: "
                                "'jupyter modeldeploy ray stop' first")
    logs = log_dir or cache_dir() / "ray-local-logs"
    address = f"127.0.0.1:{port}"
    cluster = LocalCluster(address=address, log_dir=str(logs))
    cluster.nodes.append(start_node(address=None, port=port, num_cpus=head_cpus, resources={"head": 1},
                                    labels={"modeldeploy-node": "head"}, log_dir=logs))
    if record:
        _save_state(cluster)
    try:
        _wait_port(port, 120)
        wait_for_nodes(address, 1, nodes=cluster.nodes)
        for i in range(nodes):  # one at a time: nodes starting together can miss Ray's start-up deadlines
            add_node(cluster, i, cpus=cpus_per_node)
            if record:
                _save_state(cluster)
            wait_for_nodes(address, i + 2, nodes=cluster.nodes)
    except LocalClusterError:
        stop(cluster)
        raise
    return cluster


def add_node(cluster: LocalCluster, index: int | str, *, cpus: float = 1, resources: dict[str, float] | None = None,
             env: dict[str, str] | None = None) -> LocalNode:
    """One more worker node, with `node_<index>` (and `resources`) and label `modeldeploy-node=<index>`.

    `env`: the node's environment beside this one's (another cache folder: a node without engines)."""
    node = start_node(address=cluster.address, port=0, num_cpus=cpus,
                      resources={f"node_{index}": 1, **(resources or {})},
                      labels={"modeldeploy-node": str(index)}, log_dir=Path(cluster.log_dir), env=env)
    cluster.nodes.append(node)
    return node


def kill_node(node: LocalNode, sig: int = signal.SIGKILL) -> None:
    """End one node's processes at once (a lost node), or stop them with SIGTERM."""
    try:
        os.killpg(node.pid, sig)
    except ProcessLookupError:
        return


def stop(cluster: LocalCluster | None = None, timeout: float = 30.0) -> int:
    """Stop every node of the cluster (workers first); how many were running."""
    cluster = cluster or load_state()
    if cluster is None:
        return 0
    running = cluster.alive()
    for node in sorted(running, key=lambda n: n.head):
        kill_node(node, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and cluster.alive():
        time.sleep(0.2)
    for node in cluster.alive():
        kill_node(node, signal.SIGKILL)
    recorded = load_state()
    if recorded is not None and recorded.address == cluster.address:
        _state_path().unlink(missing_ok=True)
    return len(running)
