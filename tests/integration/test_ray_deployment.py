"""Deployments on a real multi-node Ray cluster (three worker nodes on this machine) behind the same gateway.

Each replica is the real engine (llama-server on SmolLM2, sentence-transformers on MiniLM)
on the node Ray picked; requests go through a real Jupyter server's gateway with the
official `openai` client.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from jupyter_modeldeploy import ray_local
from jupyter_modeldeploy.client import ModelDeployClient
from tests.support.embedding_models import minilm_path
from tests.support.fake_server import fake_deployment, fake_llama_server
from tests.support.jupyter import JupyterProcess, free_port
from tests.support.ray_cluster import left_on_cluster, node_of, start_cluster, wait_until

pytestmark = pytest.mark.integration

KEY = "sk-ray-test-key-0001"
CHAT = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ray_local.LocalCluster]:
    started = start_cluster(tmp_path_factory.mktemp("ray-logs"), nodes=3)
    yield started
    ray_local.stop(started)


def ray_server(home: Path, cluster: ray_local.LocalCluster, *extra: str) -> JupyterProcess:
    # llama-server or nothing: a node without the build must fail, not fall back to llama-cpp-python.
    # A stream whose node froze ends (with the error event) after 45 s of silence, not the default 600 s.
    return JupyterProcess(home, extra_args=[f"--ModelDeployApp.ray_address={cluster.address}",
                                            "--ModelDeployApp.health_timeout_s=240",
                                            "--ModelDeployApp.upstream_timeout_s=45",
                                            "--ModelDeployApp.llamacpp_engine=llama-server", *extra]).start(timeout=180)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: ray_local.LocalCluster,
           llama_server_bin: Path) -> Iterator[JupyterProcess]:
    jupyter = ray_server(tmp_path_factory.mktemp("jupyter-ray"), cluster)
    yield jupyter
    jupyter.stop()


def llama_config(gguf: Path, name: str, **placement: Any) -> dict[str, Any]:
    return {"kind": "llamacpp", "name": name, "model": str(gguf), "api_key": KEY, "threads": 1, "ctx_size": 1024,
            "parallel": 2, "placement": {"target": "ray", **placement}}


def wait_record(client: ModelDeployClient, ref: str, check: Any, timeout: float, what: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        record = client.get(ref)
        assert record["status"] != "failed", record["status_reason"]
        return record if check(record) else None

    try:
        return wait_until(ready, timeout, what)
    except AssertionError:
        print("\n".join(client.logs(ref, tail=60)))
        raise


def serving(n: int) -> Any:
    return lambda r: r["status"] in ("active", "idle") and sum(x["state"] == "serving" for x in r["replicas"]) == n


def oai(record: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=record["api_base"], api_key=KEY, max_retries=0, timeout=120)


def chat(record: dict[str, Any], max_tokens: int = 8) -> str:
    answer = oai(record).chat.completions.create(model="any", messages=CHAT, max_tokens=max_tokens, temperature=0,
                                                 seed=1)
    return answer.choices[0].message.content or ""


def delete_and_check_clean(jupyter: JupyterProcess, cluster: ray_local.LocalCluster, ref: str) -> None:
    jupyter.client().delete(ref)
    empty = {"named": [], "alive": [], "placement_groups": []}
    wait_until(lambda: left_on_cluster(cluster.address) == empty, 60, "no actor or placement group left")


def test_two_replicas_pinned_to_two_nodes_both_serve_chat(server: JupyterProcess, cluster: ray_local.LocalCluster,
                                                          smollm2_gguf: Path) -> None:
    client = server.client()
    record = client.launch(llama_config(smollm2_gguf, "ray-pinned", replicas={"min": 2, "max": 2},
                                        resources={"cpus": 1, "node_labels": {"modeldeploy-node": "in(0,1)"}}))
    try:
        record = wait_record(client, record["id"], serving(2), 240, "two replicas serving")
        assert record["placement"] == "ray"
        labels = {node_of(cluster, r["pid"]).labels["modeldeploy-node"] for r in record["replicas"]}
        assert labels == {"0", "1"}
        answers = [chat(record) for _ in range(6)]
        assert all(answers)
        stream = oai(record).chat.completions.create(model="any", messages=CHAT, max_tokens=8, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        per_replica = [r["requests"] for r in client.get(record["id"])["replicas"]]
        assert len(per_replica) == 2 and min(per_replica) >= 3, per_replica

        def charted() -> dict[str, Any] | None:
            series = client.metrics(record["id"])["series"]
            named = {k for k, v in series.items() if k.startswith("replica:") and any(x is not None for x in v)}
            return series if len({k for k in named if k.endswith(":rss_bytes")}) == 2 and any(
                ":engine:" in k for k in named) else None

        series = wait_until(charted, 30, "per-replica CPU, memory and engine series")
        assert max(x for x in series["process_rss_bytes"] if x is not None) > 0
    finally:
        delete_and_check_clean(server, cluster, record["id"])


def test_load_scales_up_to_max_idle_scales_to_zero_and_a_request_brings_one_back(
    server: JupyterProcess, cluster: ray_local.LocalCluster, smollm2_gguf: Path
) -> None:
    client = server.client()
    record = client.launch(llama_config(
        smollm2_gguf, "ray-autoscale", replicas={"min": 0, "max": 2, "initial": 1}, resources={"cpus": 1},
        autoscaling={"target_in_flight": 1, "upscale_delay_s": 0, "downscale_delay_s": 3},
    ))
    stop = threading.Event()
    statuses: list[int] = []

    def load() -> None:
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                answer = http.post(f"{record['api_base']}/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                                   json={"messages": CHAT, "max_tokens": 48})
                statuses.append(answer.status_code)

    try:
        record = wait_record(client, record["id"], serving(1), 240, "one replica serving")
        workers = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for worker in workers:
            worker.start()
        wait_record(client, record["id"], serving(2), 240, "scaled up to two replicas")
        stop.set()
        for worker in workers:
            worker.join(120)
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
        asleep = wait_record(client, record["id"], lambda r: r["status"] == "sleeping" and not r["replicas"], 120,
                             "scaled to zero")
        assert "scaled to zero" in (asleep["status_reason"] or "")
        # A stream is held while a replica comes up: its head and SSE comments at once, then its events.
        with httpx.Client(timeout=240) as http, http.stream(
                "POST", f"{record['api_base']}/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                json={"messages": CHAT, "max_tokens": 8, "stream": True}) as held:
            assert held.status_code == 200 and held.headers["content-type"].startswith("text/event-stream")
            body = b"".join(held.iter_bytes()).decode()
        assert body.startswith(": waking the deployment") and body.rstrip().endswith("data: [DONE]"), body[:300]
        back = client.get(record["id"])
        assert back["status"] == "active" and len(back["replicas"]) == 1
    finally:
        stop.set()
        delete_and_check_clean(server, cluster, record["id"])


def stream_outcome(http: httpx.Client, url: str, max_tokens: int) -> str:
    """How one streamed chat ended: `done` ([DONE]), `error event` (the gateway's event for a cut stream),
    `refused <status>`, or `cut` (the connection broke without a clean end: what must not happen)."""
    try:
        with http.stream("POST", url, headers={"Authorization": f"Bearer {KEY}"},
                         json={"messages": CHAT, "max_tokens": max_tokens, "stream": True}) as answer:
            if answer.status_code != 200:
                answer.read()
                return f"refused {answer.status_code}"
            body = b"".join(answer.iter_bytes())
    except httpx.HTTPError:
        return "cut"
    events = [e for e in body.decode().split("\n\n") if e.strip()]
    if events and events[-1].strip() == "data: [DONE]":
        return "done"
    if events and '"error"' in events[-1] and "broke off the stream" in events[-1]:
        return "error event"
    return "cut"


@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_a_node_lost_mid_load_loses_no_request_and_the_record_names_the_node(
    server: JupyterProcess, cluster: ray_local.LocalCluster, smollm2_gguf: Path, how: str
) -> None:
    """A worker node lost mid-load: every non-streamed request (none had a byte of its answer before the end)
    is answered, on another replica if its own went; every stream ends cleanly (whole, or with the error
    event); the replica comes back elsewhere and the record says which node went and when.

    `killed`: the node's processes and its engine die at once (connections to it are reset). `frozen`: they
    stop where they are (SIGSTOP), as a machine that hangs or drops off the network: nothing resets the
    connections to its engine, and the requests waiting there go elsewhere once the replica leaves the rotation."""
    spare = ray_local.add_node(cluster, f"spare_{how}")  # somewhere to restart the lost replica, whatever went before
    ray_local.wait_for_nodes(cluster.address, len(cluster.alive()))
    labels = ",".join(n.labels["modeldeploy-node"] for n in cluster.alive() if not n.head)
    client = server.client()
    record = client.launch(llama_config(smollm2_gguf, f"ray-node-{how}", replicas={"min": 2, "max": 2},
                                        resources={"cpus": 1, "node_labels": {"modeldeploy-node": f"in({labels})"}}))
    stop = threading.Event()
    results: list[tuple[float, int]] = []
    streams: list[str] = []
    url = f"{record['api_base']}/chat/completions"

    def load() -> None:
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    code = http.post(url, headers={"Authorization": f"Bearer {KEY}"},
                                     json={"messages": CHAT, "max_tokens": 6}).status_code
                except httpx.HTTPError:
                    code = 599  # a connection cut by the dying replica counts as a server error
                results.append((started, code))

    def stream_load() -> None:
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                streams.append(stream_outcome(http, url, 48))

    try:
        record = wait_record(client, record["id"], serving(2), 240, "two replicas serving")
        victim = record["replicas"][0]
        node = node_of(cluster, victim["pid"])
        workers = [threading.Thread(target=f, daemon=True) for f in (load, load, load, stream_load, stream_load)]
        for worker in workers:
            worker.start()
        wait_until(lambda: len(results) >= 6 and streams, 60, "load running")
        killed_at = time.time()
        # The node goes with everything on it at once: its engine is not left the grace to finish (its
        # guardian would give it).
        lose = signal.SIGKILL if how == "killed" else signal.SIGSTOP
        os.killpg(victim["pid"], lose)
        ray_local.kill_node(node, lose)
        recovered = wait_record(
            client, record["id"],
            lambda r: serving(2)(r) and victim["id"] not in {x["id"] for x in r["replicas"] if x["restarts"] == 0},
            240, "two replicas serving again, one restarted elsewhere")
        time.sleep(2)
        stop.set()
        for worker in workers:
            worker.join(120)
        codes = [code for _, code in results]
        assert codes and set(codes) == {200}, sorted(set(codes))  # not one request lost, even those in flight
        assert streams and set(streams) <= {"done", "error event"}, sorted(set(streams))
        assert len(recovered["replicas"]) == 2
        assert node.labels["modeldeploy-node"] not in {
            node_of(cluster, r["pid"]).labels["modeldeploy-node"] for r in recovered["replicas"]}
        events = client.get(record["id"])["replica_events"]
        lost = [e for e in events if e["event"] == "lost" and e["replica"] == victim["id"]]
        assert lost and lost[0]["node"] == victim["node"], events
        assert killed_at <= lost[0]["at"] <= time.time(), (killed_at, lost[0])
        restarted = [e for e in events if e["event"] == "restarted" and e["replica"] == victim["id"]]
        assert restarted and restarted[-1]["node"] != victim["node"], events
    finally:
        stop.set()
        if how == "frozen" and "victim" in locals():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(victim["pid"], signal.SIGKILL)
            ray_local.kill_node(node)
        delete_and_check_clean(server, cluster, record["id"])
        ray_local.kill_node(spare, signal.SIGTERM)
        with contextlib.suppress(psutil.Error):
            psutil.Process(spare.pid).wait(60)  # gone before the next test counts the nodes


@pytest.fixture(scope="module")
def paced_server(tmp_path_factory: pytest.TempPathFactory, cluster: ray_local.LocalCluster) -> Iterator[JupyterProcess]:
    """A Jupyter server on the same cluster whose llama-server is the fake engine, paced like a GPU-bound
    engine (10 ms an output token, in the deployment's `parallel` slots)."""
    home = tmp_path_factory.mktemp("jupyter-ray-paced")
    program = fake_llama_server(home / "bin", "--token-s", "0.01")
    jupyter = ray_server(home, cluster, f"--ModelDeployApp.llamacpp_server={program}")
    yield jupyter
    jupyter.stop()


def test_requests_follow_load_the_replica_twice_as_fast_takes_two_thirds(
    paced_server: JupyterProcess, cluster: ray_local.LocalCluster, tmp_path: Path
) -> None:
    """Least in flight, not round-robin: with one replica's node pacing its engine twice as slow, closed-loop
    clients get their answers from the fast one about twice as often (round-robin would give a half)."""
    slow = ray_local.add_node(cluster, "slow", env={"FAKE_ENGINE_SLOWDOWN": "2"})
    fast_label = cluster.alive()[1].labels["modeldeploy-node"]  # a worker node (the head is the first)
    try:
        ray_local.wait_for_nodes(cluster.address, len(cluster.alive()))
        client = paced_server.client()
        record = client.launch({
            **fake_deployment("ray-balance"), "api_key": KEY, "parallel": 8,
            "placement": {"target": "ray", "replicas": {"min": 2, "max": 2},
                          "resources": {"cpus": 1, "node_labels": {"modeldeploy-node": f"in({fast_label},slow)"}}},
        })
        record = wait_record(client, record["id"], serving(2), 120, "two paced replicas serving")
        by_label = {node_of(cluster, r["pid"]).labels["modeldeploy-node"]: r["id"] for r in record["replicas"]}
        assert set(by_label) == {fast_label, "slow"}, by_label
        url = f"{record['api_base']}/chat/completions"
        statuses: list[int] = []

        def client_loop(count: int) -> None:
            with httpx.Client(timeout=60) as http:
                for _ in range(count):
                    statuses.append(http.post(url, headers={"Authorization": f"Bearer {KEY}"},
                                              json={"messages": CHAT, "max_tokens": 10}).status_code)

        workers = [threading.Thread(target=client_loop, args=(25,), daemon=True) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert statuses.count(200) == 150, sorted(set(statuses))

        def counted() -> dict[str, int] | None:
            sent = {r["id"]: r["requests"] for r in client.get(record["id"])["replicas"]}
            return sent if sum(sent.values()) == 150 else None

        sent = wait_until(counted, 30, "every request counted per replica")
        share = sent[by_label[fast_label]] / 150
        assert 0.58 <= share <= 0.76, (share, sent)
        delete_and_check_clean(paced_server, cluster, record["id"])
    finally:
        ray_local.kill_node(slow, signal.SIGTERM)


def test_embedding_deployment_on_ray(server: JupyterProcess, cluster: ray_local.LocalCluster) -> None:
    client = server.client()
    record = client.launch({
        "kind": "embedding", "name": "ray-embed", "api_key": KEY, "threads": 1,
        "models": [{"model": str(minilm_path()), "served_name": "minilm"}],
        "placement": {"target": "ray", "resources": {"cpus": 1}},
    })
    try:
        record = wait_record(client, record["id"], serving(1), 300, "embedding replica serving")
        vectors = oai(record).embeddings.create(model="minilm", input=["a cat", "a dog"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384
        assert vectors.usage.prompt_tokens > 0
    finally:
        delete_and_check_clean(server, cluster, record["id"])


def test_the_same_exported_json_answers_the_same_locally_and_on_ray(
    server: JupyterProcess, cluster: ray_local.LocalCluster, smollm2_gguf: Path
) -> None:
    client = server.client()
    on_ray = client.launch(llama_config(smollm2_gguf, "ray-same", resources={"cpus": 1}))
    local = None
    try:
        on_ray = wait_record(client, on_ray["id"], serving(1), 240, "ray replica serving")
        exported = client.export(on_ray["id"], include_secrets=True)
        assert exported["placement"]["target"] == "ray"
        local = client.import_config({**exported, "name": "local-same", "placement": {"target": "local"}})
        local = wait_record(client, local["id"], serving(1), 240, "local engine serving")
        assert local["placement"] == "local" and local["replicas"][0]["id"] == "local"
        assert chat(on_ray, 24) == chat(local, 24)
    finally:
        if local is not None:
            client.delete(local["id"])
        delete_and_check_clean(server, cluster, on_ray["id"])


def test_a_restarted_jupyter_server_reattaches_its_ray_replicas(
    tmp_path: Path, cluster: ray_local.LocalCluster, smollm2_gguf: Path, llama_server_bin: Path
) -> None:
    first = ray_server(tmp_path / "home", cluster)
    client = first.client()
    record = client.launch(llama_config(smollm2_gguf, "ray-reattach", resources={"cpus": 1}))
    second = None
    try:
        record = wait_record(client, record["id"], serving(1), 240, "replica serving")
        replica = record["replicas"][0]
        first.stop()
        assert psutil.pid_exists(replica["pid"])  # the replica outlives the server
        second = JupyterProcess(tmp_path / "home", extra_args=first.extra_args).start(timeout=180)
        again = wait_record(second.client(), record["id"], serving(1), 120, "re-attached")
        assert [r["id"] for r in again["replicas"]] == [replica["id"]]
        assert again["replicas"][0]["pid"] == replica["pid"]
        assert left_on_cluster(cluster.address)["named"] == [replica["id"]]
        assert chat(again)
    finally:
        for jupyter in (second, first):
            if jupyter is not None and jupyter.proc is not None and jupyter.proc.poll() is None:
                delete_and_check_clean(jupyter, cluster, record["id"])
                jupyter.stop()


def test_a_node_without_the_engine_fails_naming_the_node_and_what_is_missing(
    server: JupyterProcess, cluster: ray_local.LocalCluster, smollm2_gguf: Path, tmp_path: Path
) -> None:
    bare = ray_local.add_node(cluster, "bare", env={"JUPYTER_MODELDEPLOY_CACHE": str(tmp_path / "empty-cache")})
    try:
        ray_local.wait_for_nodes(cluster.address, len(cluster.alive()))
        client = server.client()
        record = client.launch(llama_config(smollm2_gguf, "ray-bare",
                                            resources={"cpus": 1, "node_labels": {"modeldeploy-node": "bare"}}))
        failed = wait_until(lambda: (r := client.get(record["id"]))["status"] == "failed" and r, 180, "failed")
        reason = failed["status_reason"]
        assert "no replica could start" in reason and "cannot run the engine" in reason, reason
        assert "llama-server" in reason and "install-engine llamacpp" in reason, reason
        delete_and_check_clean(server, cluster, record["id"])
    finally:
        ray_local.kill_node(bare, signal.SIGTERM)


def test_an_unreachable_cluster_fails_that_deployment_only(tmp_path: Path, smollm2_gguf: Path,
                                                           llama_server_bin: Path) -> None:
    jupyter = JupyterProcess(tmp_path / "home", extra_args=[f"--ModelDeployApp.ray_address=127.0.0.1:{free_port()}"])
    jupyter.start()
    try:
        client = jupyter.client()
        local = client.launch({"kind": "llamacpp", "name": "still-local", "model": str(smollm2_gguf), "threads": 1,
                               "ctx_size": 512, "api_key": KEY})
        record = client.launch(llama_config(smollm2_gguf, "no-cluster"))
        failed = wait_until(lambda: (r := client.get(record["id"]))["status"] == "failed" and r, 60, "failed")
        assert "no Ray cluster answers" in failed["status_reason"]
        assert wait_until(lambda: client.get(local["id"])["status"] in ("active", "idle"), 120, "local serves")
        assert client.get(local["id"])["status_reason"] is None
        with pytest.raises(openai.APIStatusError) as refused:  # the failed deployment answers nothing
            chat(failed)
        assert refused.value.status_code == 503
    finally:
        jupyter.stop()
