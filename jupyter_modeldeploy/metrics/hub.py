"""The metrics hub: samples the host, deployments and engines on a timer into ring buffers.

The gateway reports each finished request (`observe_request`); every `interval_s` the hub
turns what it saw into a row of each deployment's series, reads the engine's own `/metrics`
where it has one, and samples the host (psutil) and GPUs (NVML).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from ..gateway.records import RequestRecord
from ..supervisor import Deployment, Supervisor
from .gpu import GpuReader
from .host import HostSampler, process_tree_usage
from .prometheus import GaugeCollector, RequestMetrics
from .requests import RequestStats
from .series import SeriesTable

log = logging.getLogger(__name__)

def replica_label(replica_id: str) -> str:
    """A replica's short name in series names (the end of its actor name)."""
    return replica_id.rsplit("-", 1)[-1]


def combine_replicas(per_replica: list[dict[str, float]]) -> dict[str, float]:
    """The deployment's engine metrics from its replicas': counts and rates add up, ratios average."""
    combined: dict[str, float] = {}
    for name in {n for metrics in per_replica for n in metrics}:
        values = [m[name] for m in per_replica if name in m]
        ratio = "ratio" in name or "perc" in name
        combined[name] = sum(values) / len(values) if ratio else sum(values)
    return combined


def replica_rows(dep: Deployment) -> dict[str, float | None]:
    """Per-replica CPU, memory and requests in flight, and their sums as the deployment's process figures."""
    row: dict[str, float | None] = {}
    cpu: list[float] = []
    rss: list[float] = []
    for replica in dep.replicas:
        label = replica_label(replica.id)
        row[f"replica:{label}:cpu_percent"] = replica.stats.get("cpu_percent")
        row[f"replica:{label}:rss_bytes"] = replica.stats.get("memory_bytes")
        row[f"replica:{label}:in_flight"] = float(replica.in_flight)
        cpu += [replica.stats["cpu_percent"]] if "cpu_percent" in replica.stats else []
        rss += [replica.stats["memory_bytes"]] if "memory_bytes" in replica.stats else []
    row["process_cpu_percent"] = sum(cpu) if cpu else None
    row["process_rss_bytes"] = sum(rss) if rss else None
    row["replicas_serving"] = float(sum(r.in_rotation for r in dep.replicas))
    return row


def parse_engine_metrics(text: str, wanted: frozenset[str]) -> dict[str, float]:
    """The engine metrics named in `wanted` (the engine's launch plan declares them) from Prometheus text, labels summed."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                values[sample.name] = values.get(sample.name, 0.0) + float(sample.value)
    return values


class DeploymentSeries:
    """Everything the hub keeps for one deployment."""

    def __init__(self, window: int):
        self.stats = RequestStats()
        self.table = SeriesTable(window)
        self.engine_last: dict[str, float] = {}
        self.engine_latest: dict[str, float] = {}
        self.model_states: dict[str, Any] = {}


class MetricsHub:
    """Owns the series, the Prometheus registry and the sampling task."""

    def __init__(self, supervisor: Supervisor, *, interval_s: float = 2.0, window: int = 1800):
        self.supervisor = supervisor
        self.interval_s = interval_s
        self.window = window
        self.host = SeriesTable(window)
        self.gpus: dict[int, SeriesTable] = {}
        self.gpu_names: dict[int, str] = {}
        self.deployments: dict[str, DeploymentSeries] = {}
        self.registry = CollectorRegistry()
        self.requests = RequestMetrics(self.registry)
        self.registry.register(GaugeCollector(self._gauges))
        self._host_sampler = HostSampler()
        self._gpu = GpuReader()
        self._procs: dict[int, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_tick = time.monotonic()
        self._background: set[asyncio.Future[None]] = set()

    # Inputs -------------------------------------------------------------------------------

    def series_for(self, dep_id: str) -> DeploymentSeries:
        if dep_id not in self.deployments:
            self.deployments[dep_id] = DeploymentSeries(self.window)
        return self.deployments[dep_id]

    def observe_request(self, record: RequestRecord) -> None:
        """Called by the gateway when a request ends."""
        dep = self.supervisor.deployments.get(record.deployment_id)
        name = dep.name if dep else record.deployment_id
        model = record.model or "-"
        prompt = record.usage.prompt_tokens if record.usage else 0
        completion = record.usage.completion_tokens if record.usage else 0
        self.series_for(record.deployment_id).stats.record(
            model, record.status, record.latency_s, record.first_chunk_s if record.streamed else None, prompt, completion
        )
        labels = (name, record.deployment_id, model)
        metrics = self.requests
        metrics.child(metrics.requests, *labels, str(record.status)).inc()
        metrics.child(metrics.duration, *labels).observe(record.latency_s)
        if record.streamed and record.first_chunk_s is not None:
            metrics.child(metrics.first_chunk, *labels).observe(record.first_chunk_s)
        if prompt:
            metrics.child(metrics.prompt_tokens, *labels).inc(prompt)
        if completion:
            metrics.child(metrics.completion_tokens, *labels).inc(completion)
        if dep is not None and dep.plan is not None and dep.plan.model_status_path:
            # Router engines swap models per request: read their states right after each one,
            # so swaps between two samples are not missed.
            task = asyncio.ensure_future(self._scrape_model_status(dep))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # Sampling -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._gpu.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.tick()
            except Exception:  # sampling must survive anything
                log.exception("metrics tick failed")

    async def tick(self) -> None:
        """Take one sample of everything."""
        now_mono = time.monotonic()
        elapsed = now_mono - self._last_tick
        self._last_tick = now_mono
        now = time.time()
        self.host.append(now, self._host_sampler.sample())
        for gpu in self._gpu.read():
            self.gpu_names[gpu.index] = gpu.name
            self.gpus.setdefault(gpu.index, SeriesTable(self.window)).append(
                now,
                {
                    "utilization_percent": gpu.utilization_percent,
                    "memory_used_bytes": gpu.memory_used_bytes,
                    "memory_total_bytes": gpu.memory_total_bytes,
                    "temperature_celsius": gpu.temperature_celsius,
                    "power_watts": gpu.power_watts,  # None where the board does not report it
                },
            )
        deployments = [d for d in self.supervisor.deployments.values() if d.status.live or d.id in self.deployments]
        scrapes = await asyncio.gather(*(self._scrape(d) for d in deployments), return_exceptions=True)
        await asyncio.gather(*(self._scrape_model_status(d) for d in deployments if d.status.live),
                             return_exceptions=True)
        for dep, scraped in zip(deployments, scrapes):
            series = self.series_for(dep.id)
            row: dict[str, float | None] = series.stats.take_interval(elapsed)
            row["in_flight"] = float(dep.in_flight)
            if dep.on_ray:
                row.update(replica_rows(dep))
            else:
                usage = process_tree_usage(dep.process.pid, self._procs) if dep.process is not None else None
                row["process_cpu_percent"], row["process_rss_bytes"] = usage if usage else (None, None)
            if isinstance(scraped, dict):
                for name, value in scraped.items():
                    if name.startswith("replica:"):
                        row[name] = value
                    elif dep.plan is not None and name in dep.plan.charted_metrics.counters:
                        previous = series.engine_last.get(name)
                        rate = (value - previous) / elapsed if previous is not None else None
                        # A replica gone takes its counts out of the sum: no negative rate for it.
                        row[f"engine:{name}:rate"] = rate if rate is None or rate >= 0 else None
                        series.engine_last[name] = value
                    else:
                        row[f"engine:{name}"] = value
                series.engine_latest = scraped
            series.table.append(now, row)

    async def _scrape(self, dep: Deployment) -> dict[str, float] | None:
        if not dep.status.live or dep.plan is None or not dep.plan.metrics_path or dep.address is None:
            return None
        if dep.on_ray:
            return await self._scrape_replicas(dep)
        text = await self._metrics_text(dep.address, dep.engine_key, dep.plan.metrics_path)
        if text is None:
            return None
        values = parse_engine_metrics(text, dep.plan.charted_metrics.names)
        states = _model_states_from_text(text)
        if states:
            self.series_for(dep.id).model_states = states
        return values

    async def _metrics_text(self, address: Any, key: str | None, path: str) -> str | None:
        try:
            response = await self.supervisor.engine_http.request(address, key, "GET", path)
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None

    async def _scrape_replicas(self, dep: Deployment) -> dict[str, float] | None:
        """Each serving replica's engine metrics (`replica:<id>:engine:<name>`) and the deployment's totals."""
        assert dep.plan is not None and dep.plan.metrics_path is not None
        serving = [r for r in dep.replicas if r.in_rotation]
        texts = await asyncio.gather(*(self._metrics_text(r.address, r.engine_key, dep.plan.metrics_path)
                                       for r in serving))
        per_replica = {replica_label(r.id): parse_engine_metrics(t, dep.plan.charted_metrics.names)
                       for r, t in zip(serving, texts) if t is not None}
        if not per_replica:
            return None
        values: dict[str, float] = combine_replicas(list(per_replica.values()))
        for label, metrics in per_replica.items():
            values.update({f"replica:{label}:engine:{name}": value for name, value in metrics.items()})
        return values

    async def _scrape_model_status(self, dep: Deployment) -> None:
        """Per-model states of a router-mode engine (`/v1/models` with a status per model)."""
        if dep.plan is None or not dep.plan.model_status_path or dep.address is None:
            return
        try:
            response = await self.supervisor.engine_http.request(
                dep.address, dep.engine_key, "GET", dep.plan.model_status_path
            )
            data = response.json().get("data", [])
        except (httpx.HTTPError, ValueError, AttributeError):
            return
        series = self.series_for(dep.id)
        for item in data:
            status = item.get("status") if isinstance(item, dict) else None
            value = status.get("value") if isinstance(status, dict) else None
            if not isinstance(value, str):
                continue
            state = dep.plan.model_state_words.get(value, value)
            previous = series.model_states.get(item["id"], {})
            swaps = previous.get("swaps", 0)
            if state == "on_device" and previous.get("state") not in (None, "on_device"):
                swaps += 1  # brought back after an unload
            series.model_states[item["id"]] = {"state": state, "swaps": swaps}

    # Outputs ------------------------------------------------------------------------------

    def model_states(self, dep: Deployment) -> dict[str, dict[str, Any]]:
        """Per-model state reported by multi-model engines (name -> {state, swaps, swap_seconds})."""
        series = self.deployments.get(dep.id)
        return dict(series.model_states) if series else {}

    def totals(self, dep: Deployment) -> dict[str, Any]:
        """Exact request and token counters of a deployment since the server started."""
        series = self.deployments.get(dep.id)
        return series.stats.totals.to_json() if series else {}

    def deployment_json(self, dep: Deployment, since: float | None) -> dict[str, Any]:
        series = self.series_for(dep.id)
        data = series.table.since(since)
        data["totals"] = series.stats.totals.to_json()
        data["models"] = {name: t.to_json() for name, t in series.stats.per_model.items()}
        data["in_flight"] = dep.in_flight
        data["engine"] = dict(series.engine_latest)
        data["model_states"] = dict(series.model_states)
        data["interval_s"] = self.interval_s
        return data

    def host_json(self, since: float | None) -> dict[str, Any]:
        data = self.host.since(since)
        data["gpus"] = [
            {"index": index, "name": self.gpu_names.get(index, ""), **table.since(since)}
            for index, table in sorted(self.gpus.items())
        ]
        data["gpu_available"] = self._gpu.available
        data["interval_s"] = self.interval_s
        return data

    def _gauges(self) -> list[tuple[str, str, tuple[str, ...], list[tuple[tuple[str, ...], float]]]]:
        host = {
            "modeldeploy_host_cpu_util_percent": ("cpu_percent", "Host CPU utilisation."),
            "modeldeploy_host_memory_used_bytes": ("memory_used_bytes", "Host memory in use."),
            "modeldeploy_host_network_receive_bytes_per_second": ("net_rx_bytes_per_s", "Network receive rate."),
            "modeldeploy_host_network_transmit_bytes_per_second": ("net_tx_bytes_per_s", "Network transmit rate."),
            "modeldeploy_host_disk_read_bytes_per_second": ("disk_read_bytes_per_s", "Disk read rate."),
            "modeldeploy_host_disk_write_bytes_per_second": ("disk_write_bytes_per_s", "Disk write rate."),
        }
        out: list[tuple[str, str, tuple[str, ...], list[tuple[tuple[str, ...], float]]]] = []
        for name, (column, text) in host.items():
            value = self.host.last(column)
            out.append((name, text, (), [((), value)] if value is not None else []))
        gpu_metrics = {
            "modeldeploy_gpu_utilization_percent": ("utilization_percent", "GPU utilisation."),
            "modeldeploy_gpu_memory_used_bytes": ("memory_used_bytes", "GPU memory in use."),
            "modeldeploy_gpu_temperature_celsius": ("temperature_celsius", "GPU temperature."),
            "modeldeploy_gpu_power_watts": ("power_watts", "GPU power draw."),
        }
        for name, (column, text) in gpu_metrics.items():
            samples = []
            for index, table in self.gpus.items():
                value = table.last(column)
                if value is not None:
                    samples.append(((str(index), self.gpu_names.get(index, "")), value))
            out.append((name, text, ("gpu", "name"), samples))
        deps = list(self.supervisor.deployments.values())
        dep_labels = ("deployment", "deployment_id")
        up = [((d.name, d.id, d.status.value), 1.0 if d.status.answering else 0.0) for d in deps]
        out.append(("modeldeploy_deployment_up", "1 while the deployment's engine is serving.", (*dep_labels, "status"), up))
        in_flight = [((d.name, d.id), float(d.in_flight)) for d in deps]
        out.append(("modeldeploy_requests_in_flight", "Requests in flight through the gateway.", dep_labels, in_flight))
        for name, field_name, text in QUEUE_METRICS:
            samples = [((d.name, d.id), float(d.queue.get(field_name, 0))) for d in deps]
            out.append((name, text, dep_labels, samples))
        cpu_samples, rss_samples = [], []
        for d in deps:
            series = self.deployments.get(d.id)
            if series is None or not d.status.live:
                continue
            cpu, rss = series.table.last("process_cpu_percent"), series.table.last("process_rss_bytes")
            if cpu is not None:
                cpu_samples.append(((d.name, d.id), cpu))
            if rss is not None:
                rss_samples.append(((d.name, d.id), rss))
        out.append(("modeldeploy_deployment_cpu_util_percent", "CPU of the deployment's processes.", dep_labels, cpu_samples))
        out.append(("modeldeploy_deployment_memory_rss_bytes", "Resident memory of the deployment's processes.", dep_labels,
                    rss_samples))
        return out


QUEUE_METRICS = (
    ("modeldeploy_queue_depth", "depth", "Requests waiting for a slot (past max_concurrent_requests)."),
    ("modeldeploy_queue_served_total", "served", "Requests that waited in the queue and got their slot."),
    ("modeldeploy_queue_rejected_total", "rejected", "Requests refused for the queue (full, or waited too long)."),
    ("modeldeploy_queue_wait_seconds_total", "wait_s_total", "Seconds the served requests waited in the queue."),
)


def _model_states_from_text(text: str) -> dict[str, dict[str, Any]]:
    """Per-model memory state and swaps from an engine's `*_model_state{model,state}` and
    `*_model_swaps{model,direction}` / `*_model_swap_seconds{model,direction}` samples."""
    states: dict[str, dict[str, Any]] = {}
    if "model_state" not in text:
        return states
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            entry = states.setdefault(model, {})
            if sample.name.endswith("model_state") and sample.value == 1:
                entry["state"] = sample.labels.get("state")
            elif sample.name.endswith("model_swaps") and sample.labels.get("direction") == "in":
                entry["swaps"] = int(sample.value)
            elif sample.name.endswith("model_swap_seconds") and sample.labels.get("direction") == "in":
                entry["swap_seconds"] = float(sample.value)
    return {model: entry for model, entry in states.items() if "state" in entry}
