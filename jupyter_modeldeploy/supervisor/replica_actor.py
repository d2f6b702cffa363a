"""One replica of a Ray deployment, as it runs on its node: the same engine the local target runs.

`EngineReplica` is the body of a Ray actor (`ray_placement.py` wraps it with `ray.remote`, so
importing this module needs no Ray). On its node it plans the launch with the deployment's
engine (`engines/`), the node's own engine install and a TCP port on the node's address,
then runs the engine under the same guardian as a local launch (`reaper.py`: own process
group, killed with the actor's worker). If the engine exits, the actor's worker exits too, so
Ray restarts the replica (its `max_restarts`) and the new incarnation starts the engine anew.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import psutil

from ..config import parse_config
from ..engines import EngineAddress, EngineSettings, EngineUnavailable, LaunchContext, LaunchPlan, get_engine
from . import reaper

LOG_LINES = 2000
SCRUBBED_ENV = ("JUPYTER_TOKEN", "JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN", "JPY_SESSION_NAME", "RAY_ADDRESS")


class ReplicaStartError(RuntimeError):
    """The engine cannot start on this node; the message names the node and what is missing."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EngineReplica:
    """Runs one engine of a deployment on this node (a Ray actor's body)."""

    def __init__(self, spec: dict[str, Any]):
        # spec: kind, config (exported with secrets), engine_key, settings (EngineSettings fields),
        # deployment_id, replica_id, grace_s; it lives in the cluster's object store, as any actor argument.
        self._spec = spec
        self._lock = threading.Lock()
        self._lines: deque[tuple[int, str]] = deque(maxlen=LOG_LINES)
        self._line_no = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._plan: LaunchPlan | None = None
        self._address: EngineAddress | None = None
        self._work_dir: Path | None = None
        self._stopping = False
        self._incarnation = f"{os.getpid()}-{time.time():.3f}"
        self._node_id, self._node_ip = self._where()

    @staticmethod
    def _where() -> tuple[str, str]:
        try:
            import ray

            return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()
        except Exception:  # outside Ray (unit tests of the body): this host
            return socket.gethostname(), "127.0.0.1"

    @staticmethod
    def _gcs_address() -> str | None:
        try:
            import ray

            return str(ray.get_runtime_context().gcs_address)
        except Exception:  # outside Ray
            return None

    # Start -------------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Start the engine if it is not running (idempotent: a restarted actor starts it anew); its facts."""
        with self._lock:
            if self._proc is None:
                self._launch()
            return self.info()

    def _launch(self) -> None:
        spec = self._spec
        config = parse_config(spec["config"])
        self._work_dir = Path(tempfile.mkdtemp(prefix=f"modeldeploy-{spec['deployment_id']}-"))
        host = self._node_ip
        ctx = LaunchContext(
            port=_free_port(host), engine_key=spec["engine_key"], work_dir=self._work_dir,
            settings=EngineSettings(**spec.get("settings", {})), socket_path=None, host=host,
            ray_address=self._gcs_address(),
        )
        try:
            plan = get_engine(config.kind).plan(config, ctx)  # type: ignore[attr-defined]
        except (EngineUnavailable, FileNotFoundError, ValueError) as exc:
            raise ReplicaStartError(f"node {self._node_ip} ({self._node_id[:12]}) cannot run the engine: {exc}") from None
        for name, content in plan.files.items():
            fd = os.open(self._work_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(content)
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env.update(plan.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        guarded = [sys.executable, reaper.__file__, str(spec.get("grace_s", 10.0)), "--", *plan.argv]
        try:
            self._proc = subprocess.Popen(
                guarded, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                cwd=str(self._work_dir), start_new_session=True,
            )
        except OSError as exc:
            raise ReplicaStartError(f"node {self._node_ip}: cannot start {Path(plan.argv[0]).name}: {exc}") from None
        self._plan = plan
        self._address = plan.listen or EngineAddress(host=host, port=ctx.port)
        self._note(f"[modeldeploy] replica {spec['replica_id']}: {Path(plan.argv[0]).name} on {self._address.describe()}")
        threading.Thread(target=self._pump, daemon=True).start()

    def _note(self, line: str) -> None:
        self._line_no += 1
        self._lines.append((self._line_no, line.rstrip("\n")))

    def _pump(self) -> None:
        """Console lines into the buffer; when the engine ends (not stopped by us), end this worker: Ray restarts it."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for raw in proc.stdout:
            self._note(raw.decode("utf-8", errors="replace"))
        code = proc.wait()
        if not self._stopping:
            self._note(f"[modeldeploy] the engine exited with code {code}; the replica restarts")
            time.sleep(1.0)  # leave the last lines to the next log call
            os._exit(1)  # an unexpected worker exit: Ray restarts the actor (max_restarts)

    # Facts -------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Where the engine listens, its pid, node and incarnation (new after each Ray restart)."""
        proc = self._proc
        return {
            "node": self._node_id, "node_ip": self._node_ip, "incarnation": self._incarnation,
            "pid": proc.pid if proc else None, "returncode": proc.poll() if proc else None,
            "host": self._address.host if self._address else None,
            "port": self._address.port if self._address else None,
        }

    def plan(self) -> LaunchPlan | None:
        """The launch plan this node made, less its command line, environment and files (the gateway needs
        its routes, models, limits and metrics; the secrets stay on the node)."""
        if self._plan is None:
            return None
        return dataclasses.replace(self._plan, argv=self._plan.argv[:1], env={}, files={}, secrets=[])

    def engine_key(self) -> str:
        """The key the engine requires (for a Jupyter server that re-attaches this replica)."""
        return str(self._spec["engine_key"])

    def logs(self, after: int) -> tuple[int, list[str]]:
        """Console lines numbered above `after`, and the last number."""
        lines = [text for number, text in list(self._lines) if number > after]
        return self._line_no, lines

    def stats(self) -> dict[str, float]:
        """CPU percent and resident memory of the engine's process tree."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return {}
        try:
            root = psutil.Process(proc.pid)
            tree = [root, *root.children(recursive=True)]
            cpu = sum(p.cpu_percent(interval=None) for p in tree)
            rss = sum(p.memory_info().rss for p in tree)
        except psutil.Error:
            return {}
        return {"cpu_percent": cpu, "memory_bytes": float(rss)}

    # Stop --------------------------------------------------------------------------------

    def stop(self, grace_s: float) -> int | None:
        """Stop the engine (SIGTERM to its guardian, which ends the group after `grace_s`); its exit code."""
        self._stopping = True
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace_s + 5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
        return proc.returncode
