"""A real multi-node Ray cluster on this machine for tests, and what is left on it.

Nodes are `ray start --block` processes of `jupyter_modeldeploy.ray_local` (the cluster
`jupyter modeldeploy ray start` gives users): a head without CPUs and worker nodes of one CPU
each, labelled `modeldeploy-node=<i>`. A test loses a node by killing its process group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from jupyter_modeldeploy import ray_local
from tests.support.jupyter import free_port

NAMESPACE = "modeldeploy"
_LEFT_SCRIPT = """
import json, sys, ray
from ray._private import state
ray.init(address=sys.argv[1], namespace=sys.argv[2], log_to_driver=False, configure_logging=False)
named = [n for n in ray.util.list_named_actors(all_namespaces=False) if str(n).startswith("md-")]
alive = [a.get("Name") for a in state.actors().values()
         if str(a.get("Name") or "").startswith("md-") and a.get("State") != "DEAD"]
groups = [g for g, info in ray.util.placement_group_table().items() if info.get("state") != "REMOVED"]
print(json.dumps({"named": named, "alive": alive, "placement_groups": groups}))
"""


def start_cluster(log_dir: Path, *, nodes: int = 3) -> ray_local.LocalCluster:
    """A head and `nodes` worker nodes, kept to the test (not recorded for `ray status`)."""
    return ray_local.start(nodes=nodes, cpus_per_node=1, port=free_port(), log_dir=log_dir, record=False)


def left_on_cluster(address: str) -> dict[str, list[str]]:
    """Replica actors (named, or not yet dead) and placement groups left on the cluster."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", _LEFT_SCRIPT, address, NAMESPACE], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def node_of(cluster: ray_local.LocalCluster, pid: int) -> ray_local.LocalNode:
    """The node whose processes include `pid` (a replica's engine)."""
    nodes = {n.pid: n for n in cluster.nodes}
    process: psutil.Process | None = psutil.Process(pid)
    while process is not None:
        if process.pid in nodes:
            return nodes[process.pid]
        process = process.parent()
    raise AssertionError(f"process {pid} belongs to no node of the cluster")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(interval)
