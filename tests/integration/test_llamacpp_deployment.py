"""llama.cpp deployments for real: launched through the REST API, called with the openai client."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from jupyter_modeldeploy.client import ModelDeployClient, ModelDeployError
from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration

API_KEY = "sk-integration-test-key-0001"


def wait_status(client: ModelDeployClient, ref: str, wanted: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    record = client.get(ref)
    while record["status"] not in wanted:
        assert time.monotonic() < deadline, f"{ref} stayed {record['status']}: {record['status_reason']}"
        time.sleep(0.2)
        record = client.get(ref)
    return record


def launch(client: ModelDeployClient, gguf: Path, name: str, **fields: object) -> dict:
    config = {"kind": "llamacpp", "name": name, "model": str(gguf), "api_key": API_KEY, "threads": 2,
              "ctx_size": 2048, **fields}
    record = client.launch(config)
    assert record["status"] == "loading"
    return record


@pytest.fixture(scope="module")
def chat_deployment(jupyter_server: JupyterProcess, smollm2_gguf: Path):
    client = jupyter_server.client()
    record = launch(client, smollm2_gguf, "chat-smol", parallel=4)
    record = wait_status(client, record["id"], {"active", "idle"})
    yield record
    client.delete(record["id"])


def openai_client(record: dict, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=record["api_base"], api_key=key, max_retries=0, timeout=120)


def test_chat_streaming_and_completions(chat_deployment: dict) -> None:
    oai = openai_client(chat_deployment)
    models = [m.id for m in oai.models.list().data]
    assert models == ["SmolLM2-135M-Instruct.Q4_1"]
    chat = oai.chat.completions.create(
        model=models[0], messages=[{"role": "user", "content": "Say hello"}], max_tokens=8, temperature=0
    )
    assert chat.choices[0].message.content
    assert chat.usage is not None and chat.usage.completion_tokens > 0
    stream = oai.chat.completions.create(
        model=models[0], messages=[{"role": "user", "content": "Count to five"}], max_tokens=12, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 3 and "".join(pieces)
    completion = oai.completions.create(model=models[0], prompt="The capital of France is", max_tokens=6)
    assert completion.choices[0].text


def test_status_record_and_engine_notes(jupyter_server: JupyterProcess, chat_deployment: dict) -> None:
    record = jupyter_server.client().get(chat_deployment["name"])
    assert record["engine"]["program"] == "llama-server"
    assert record["engine"]["notes"] == []
    assert record["endpoint_url"].endswith(f"/modeldeploy/endpoints/{record['route']}")
    assert record["has_api_key"] is True
    assert "api_key" not in record["config"]
    assert API_KEY not in json.dumps(record)
    statuses = [h["status"] for h in record["status_history"]]
    assert statuses[:2] == ["loading", "active"] or statuses[1:3] == ["loading", "active"]


def test_test_command_works_when_key_filled_in(chat_deployment: dict) -> None:
    import shlex
    import subprocess

    command = chat_deployment["test_command"].replace("$MODELDEPLOY_API_KEY", API_KEY)
    out = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120)
    body = json.loads(out.stdout)
    assert body["choices"][0]["message"]["content"]


def test_test_command_works_as_pasted(jupyter_server: JupyterProcess, chat_deployment: dict) -> None:
    """The server's command carries the key in hand (the deployment's own, or one given) and answers 200."""
    import subprocess

    client = jupyter_server.client()
    own = client.test_command(chat_deployment["id"])
    assert own["key_source"] == "fixed" and API_KEY in own["command"] and "$" not in own["command"]
    token = client.create_token(deployment=chat_deployment["id"], name="pasted")["token"]
    given = client.test_command(chat_deployment["id"], key=token, prompt="Say yes")
    assert given["key_source"] == "given" and token in given["command"]
    for command in (own["command"], given["command"]):
        out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
        assert json.loads(out.stdout)["choices"][0]["message"]["content"], out.stdout + out.stderr


def test_tokens_per_second_matches_the_engines_count(jupyter_server: JupyterProcess, chat_deployment: dict) -> None:
    """Over a minute of steady load, the charted tokens/s (completion tokens per interval, per second)
    adds up to the engine's own count of predicted tokens within 10%."""
    import threading

    client = jupyter_server.client()
    oai = openai_client(chat_deployment)
    model = chat_deployment["models"][0]["name"]
    stop = threading.Event()
    completion_tokens: list[int] = []

    def load(stream: bool) -> None:
        messages = [{"role": "user", "content": "Write a long story about a fox."}]
        while not stop.is_set():
            if stream:  # streamed answers count too (the gateway reads their usage on the way)
                chunks = list(oai.chat.completions.create(model=model, messages=messages, max_tokens=48,
                                                          temperature=0.8, stream=True))
                completion_tokens.append(sum(1 for c in chunks if c.choices and c.choices[0].delta.content))
                continue
            answer = oai.chat.completions.create(model=model, messages=messages, max_tokens=48, temperature=0.8)
            completion_tokens.append(answer.usage.completion_tokens)

    def engine_count() -> float:
        return float(client.metrics(chat_deployment["id"])["engine"].get("llamacpp:tokens_predicted_total", 0))

    def idle_and_scraped() -> float:
        deadline = time.monotonic() + 30
        while client.metrics(chat_deployment["id"])["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(5)  # two samples after the last request, so the engine's counter has been read
        return time.time()

    start = idle_and_scraped()
    before = engine_count()
    workers = [threading.Thread(target=load, args=(stream,), daemon=True) for stream in (False, True)]
    for w in workers:
        w.start()
    time.sleep(60)
    stop.set()
    for w in workers:
        w.join(120)
    end = idle_and_scraped()
    engine_tokens = engine_count() - before
    data = client.metrics(chat_deployment["id"], since=start)
    t, rate = data["t"], data["series"]["tokens_per_s"]
    rows = [(t[i] - t[i - 1], rate[i]) for i in range(1, len(t)) if t[i] <= end]
    charted = sum(dt * (r or 0.0) for dt, r in rows)
    assert sum(completion_tokens) >= 150, completion_tokens  # enough requests that edges do not matter
    assert engine_tokens > 0
    assert abs(charted - engine_tokens) <= 0.10 * engine_tokens, (charted, engine_tokens, sum(completion_tokens))
    # And it is a rate: per second over the interval, not per request.
    seconds = sum(dt for dt, _ in rows)
    assert abs(charted / seconds - engine_tokens / seconds) <= 0.10 * engine_tokens / seconds


def test_embeddings_in_embedding_mode(jupyter_server: JupyterProcess, smollm2_gguf: Path) -> None:
    client = jupyter_server.client()
    record = launch(client, smollm2_gguf, "embed-smol", embedding=True, pooling="mean")
    try:
        record = wait_status(client, record["id"], {"active", "idle"})
        oai = openai_client(record)
        result = oai.embeddings.create(model="SmolLM2-135M-Instruct.Q4_1", input=["hello world", "goodbye"])
        assert len(result.data) == 2
        vectors = [d.embedding for d in result.data]
        assert len(vectors[0]) == 576  # SmolLM2-135M's hidden size
        assert vectors[0] != vectors[1]
    finally:
        client.delete(record["id"])


def test_idle_lifecycle_loading_active_idle_stopped(jupyter_server: JupyterProcess, smollm2_gguf: Path) -> None:
    client = jupyter_server.client()
    # Idle after 1 s without requests; stopped after 4 s (0.0011 h) without requests.
    record = launch(client, smollm2_gguf, "idle-smol", idle_time_limit_hours=4 / 3600, last_action_report_interval_s=1)
    record = wait_status(client, record["id"], {"active", "idle"})
    oai = openai_client(record)
    oai.completions.create(model="x", prompt="Hi", max_tokens=2)
    assert client.get(record["id"])["status"] == "active"
    wait_status(client, record["id"], {"idle"}, timeout=30)
    final = wait_status(client, record["id"], {"stopped"}, timeout=60)
    assert "idle" in final["status_reason"]
    seen = [h["status"] for h in final["status_history"]]
    for earlier, later in zip(["loading", "active", "idle", "stopped"], ["active", "idle", "stopped"]):
        assert seen.index(earlier) < len(seen) - 1 - seen[::-1].index(later)
    client.delete(record["id"])


def test_idle_clock_never_fires_during_a_request(jupyter_server: JupyterProcess, smollm2_gguf: Path) -> None:
    client = jupyter_server.client()
    record = launch(client, smollm2_gguf, "busy-smol", idle_time_limit_hours=3 / 3600, last_action_report_interval_s=1,
                    parallel=1)
    record = wait_status(client, record["id"], {"active", "idle"})
    oai = openai_client(record)
    # A request that runs longer than the idle limit must complete: a stop would kill the engine under it.
    started = time.time()
    out = oai.completions.create(model="x", prompt="Write a long story about a cat.", max_tokens=600,
                                 extra_body={"ignore_eos": True})
    ended = time.time()
    assert out.usage.completion_tokens == 600
    history = client.get(record["id"])["status_history"]
    stops = [h for h in history if h["status"] == "stopped" and h["at"] >= started]
    assert not stops or stops[0]["at"] >= ended - 0.5, "stopped while the request was in flight"
    # ... and the clock then runs from the request's end.
    final = wait_status(client, record["id"], {"stopped"}, timeout=60)
    assert final["status_history"][-1]["at"] >= ended + 2.5
    client.delete(record["id"])


def test_bad_model_path_fails_with_reason(jupyter_server: JupyterProcess) -> None:
    client = jupyter_server.client()
    record = client.launch({"kind": "llamacpp", "name": "missing", "model": "/nonexistent/model.gguf"})
    failed = wait_status(client, record["id"], {"failed"})
    assert "/nonexistent/model.gguf" in failed["status_reason"]
    client.delete(record["id"])


def test_corrupt_model_file_fails_with_exit_code(jupyter_server: JupyterProcess, tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all" * 100)
    client = jupyter_server.client()
    record = client.launch({"kind": "llamacpp", "name": "broken", "model": str(bad)})
    failed = wait_status(client, record["id"], {"failed"})
    assert failed["exit_code"] not in (None, 0)
    assert "exited with code" in failed["status_reason"] or "killed" in failed["status_reason"]
    assert "\n" in failed["status_reason"], "the last log lines are part of the reason"
    client.delete(record["id"])


def test_engine_killed_from_outside_is_failed(jupyter_server: JupyterProcess, smollm2_gguf: Path) -> None:
    client = jupyter_server.client()
    record = launch(client, smollm2_gguf, "victim")
    record = wait_status(client, record["id"], {"active", "idle"})
    reaper = psutil.Process(record["pid"])
    engine = next(p for p in reaper.children() if "llama-server" in p.name())
    engine.send_signal(signal.SIGKILL)
    failed = wait_status(client, record["id"], {"failed"}, timeout=30)
    assert "signal 9" in failed["status_reason"]
    # Relaunch brings it back under the same endpoint.
    client.relaunch(record["id"])
    again = wait_status(client, record["id"], {"active", "idle"})
    assert again["api_base"] == record["api_base"]
    client.delete(record["id"])


def test_bad_input_gets_4xx_json_and_changes_nothing(jupyter_server: JupyterProcess, chat_deployment: dict) -> None:
    before = jupyter_server.client().list()
    cases = [
        ("POST", "deployments", {"content": b"{not json"}, 400),
        ("POST", "deployments", {"json": {"kind": "llamacpp", "name": "x"}}, 422),
        ("POST", "deployments", {"json": {"kind": "nope", "name": "x", "model": "m"}}, 422),
        ("POST", "deployments", {"json": {"kind": "llamacpp", "name": "x", "model": "m", "bogus": 1}}, 422),
        ("POST", "deployments", {"json": {"kind": "llamacpp", "name": "x", "model": "m", "split_mode": "diag"}}, 422),
        ("POST", "deployments", {"json": {"kind": "llamacpp", "name": chat_deployment["name"], "model": "m"}}, 409),
        ("GET", "deployments/does-not-exist", {}, 404),
        ("POST", "deployments/does-not-exist/stop", {}, 404),
        ("POST", f"deployments/{chat_deployment['id']}/clone", {"json": {}}, 422),  # no name: a field error
        ("POST", f"deployments/{chat_deployment['id']}/relaunch", {}, 409),
        ("GET", "schemas/nope", {}, 404),
        ("DELETE", "tokens/t-missing", {}, 404),
    ]
    for method, path, kwargs, status in cases:
        response = jupyter_server.api(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]
    wrong = jupyter_server.api("POST", "deployments", json={"kind": "llamacpp", "name": "x", "model": "m", "top_p": 7})
    errors = wrong.json()["errors"]
    assert errors[0]["field"] == "top_p"
    choice = jupyter_server.api("POST", "deployments", json={"kind": "llamacpp", "name": "x", "model": "m",
                                                             "rope_scaling": "cubic"}).json()["errors"][0]
    assert choice["field"] == "rope_scaling" and choice["allowed"] == ["none", "linear", "yarn"]
    after = jupyter_server.client().list()
    assert [_untouched(d) for d in after] == [_untouched(d) for d in before]


def _untouched(record: dict) -> tuple:
    """What bad input must not change: the same deployments, serving from the same engine process.

    Not the status itself: a deployment without traffic moves from active to idle on its own.
    """
    return record["id"], record["serving"], record["pid"], record["started_at"], record["api_base"]


def test_rest_requires_jupyter_auth_and_xsrf(jupyter_server: JupyterProcess) -> None:
    anonymous = httpx.get(f"{jupyter_server.url}api/modeldeploy/deployments")
    assert anonymous.status_code == 403
    # A cookie-less POST without a token is refused too (XSRF / auth).
    post = httpx.post(f"{jupyter_server.url}api/modeldeploy/deployments", json={})
    assert post.status_code == 403


def test_export_import_clone_round_trip(jupyter_server: JupyterProcess, chat_deployment: dict) -> None:
    client = jupyter_server.client()
    exported = client.export(chat_deployment["id"])
    assert "api_key" not in exported and "hf_token" not in exported
    assert exported["kind"] == "llamacpp" and exported["schema_version"] == 1
    with_secrets = client.export(chat_deployment["id"], include_secrets=True)
    assert "hf_token" not in with_secrets or with_secrets["hf_token"] is None
    exported["name"] = "imported-smol"
    imported = client.import_config(exported, start=False)
    assert imported["status"] == "stopped"
    assert client.export(imported["id"]) == exported
    clone = client.clone(chat_deployment["id"], "cloned-smol", {"temperature": 0.2}, start=False)
    clone_config = client.export(clone["id"])
    assert clone_config["temperature"] == 0.2 and clone_config["name"] == "cloned-smol"
    assert clone_config["route"] == ""
    assert clone["route"] != chat_deployment["route"]
    client.delete(imported["id"])
    client.delete(clone["id"])


def test_logs_tail_and_follow(jupyter_server: JupyterProcess, smollm2_gguf: Path) -> None:
    client = jupyter_server.client()
    record = launch(client, smollm2_gguf, "logs-smol")
    lines: list[str] = []
    for line in client.follow_logs(record["id"], tail=100):
        lines.append(line)
        if "[modeldeploy] healthy" in line or "[modeldeploy] failed" in line:
            break
    assert any("starting llama-server" in line for line in lines)
    wait_status(client, record["id"], {"active", "idle"})
    tail = client.logs(record["id"], tail=5)
    assert 0 < len(tail) <= 5
    joined = "\n".join(client.logs(record["id"], tail=2000))
    assert API_KEY not in joined
    client.delete(record["id"])


def test_dry_run_prints_command_with_secrets_masked(jupyter_server: JupyterProcess, smollm2_gguf: Path) -> None:
    plan = jupyter_server.client().launch(
        {"kind": "llamacpp", "name": "dry", "model": str(smollm2_gguf), "hf_token": "hf_secret_value_123",
         "api_key": API_KEY, "no_mmap": True},
        dry_run=True,
    )
    text = json.dumps(plan)
    assert "hf_secret_value_123" not in text and API_KEY not in text
    assert plan["env"]["HF_TOKEN"] == "********"
    assert "--load-mode" in plan["argv"] and str(smollm2_gguf) in plan["argv"]
    assert all(d["name"] != "dry" for d in jupyter_server.client().list())


def test_hugging_face_gguf_reference_resolves_offline(
    jupyter_server: JupyterProcess, smollm2_gguf: Path, tmp_path: Path
) -> None:
    """`owner/repo/path/file.gguf` goes through huggingface_hub's cache (HF_HUB_OFFLINE=1)."""
    from tests.support.hf_cache import seed_hf_cache

    cache = seed_hf_cache(tmp_path / "hf", "test-org/smol-gguf", "gguf/SmolLM2.Q4_1.gguf", smollm2_gguf)
    server = JupyterProcess(tmp_path / "jupyter-hf", env={"HF_HUB_CACHE": str(cache)}).start()
    try:
        client = server.client()
        record = client.launch({"kind": "llamacpp", "name": "hf-smol",
                                "model": "test-org/smol-gguf/gguf/SmolLM2.Q4_1.gguf", "hf_token": "hf_not_logged_42"})
        record = wait_status(client, record["id"], {"active", "idle"})
        assert record["models"][0]["name"] == "SmolLM2.Q4_1"
        logs = "\n".join(client.logs(record["id"], tail=2000))
        assert "hf_not_logged_42" not in logs
        proc = psutil.Process(record["pid"])
        engine = next(p for p in proc.children() if "llama-server" in p.name())
        assert not any("hf_not_logged_42" in arg for arg in engine.cmdline())
        missing = client.launch({"kind": "llamacpp", "name": "hf-missing", "model": "test-org/absent/x.gguf"})
        failed = wait_status(client, missing["id"], {"failed"})
        assert "test-org/absent/x.gguf" in failed["status_reason"]
    finally:
        server.stop()


def test_restart_lists_deployments_and_sigkill_leaves_no_engine(smollm2_gguf: Path, tmp_path: Path) -> None:
    home = tmp_path / "jupyter-restart"
    server = JupyterProcess(home).start()
    client = server.client()
    # restart: never keeps it stopped across the restart (the default, always, relaunches it by itself:
    # tests/integration/test_restart_policy.py).
    running = wait_status(client, launch(client, smollm2_gguf, "survivor", restart="never")["id"], {"active", "idle"})
    stored = client.launch({"kind": "llamacpp", "name": "kept", "model": str(smollm2_gguf)}, start=False)
    server.stop()
    assert not psutil.pid_exists(running["pid"]) or psutil.Process(running["pid"]).status() == psutil.STATUS_ZOMBIE

    server = JupyterProcess(home, port=server.port, token=server.token).start()
    try:
        client = server.client()
        listed = {d["name"]: d for d in client.list()}
        assert set(listed) == {"survivor", "kept"}
        assert listed["survivor"]["status"] == "stopped"
        assert "Jupyter server" in listed["survivor"]["status_reason"]
        client.relaunch("survivor")
        relaunched = wait_status(client, "survivor", {"active", "idle"})
        reaper = psutil.Process(relaunched["pid"])
        family = [reaper, *reaper.children(recursive=True)]
        assert any("llama-server" in p.name() for p in family)
    finally:
        server.kill()
    _gone, alive = psutil.wait_procs(family, timeout=20)
    assert not alive, f"engine processes outlived a SIGKILLed server: {[p.pid for p in alive]}"
    assert stored["status"] == "stopped"


def test_cli_commands(jupyter_server: JupyterProcess, smollm2_gguf: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "JUPYTER_SERVER_URL": jupyter_server.url, "JUPYTER_TOKEN": jupyter_server.token}

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([sys.executable, "-m", "jupyter_modeldeploy.cli", *args], capture_output=True,
                             text=True, env=env, timeout=180)
        if check:
            assert out.returncode == 0, out.stderr
        return out

    dry = cli("launch", "--kind", "llamacpp", "--model", str(smollm2_gguf), "--name", "cli-smol", "--dry-run",
              "api_key=sk-cli-secret-99", "temperature=0.3")
    assert "llama-server" in dry.stdout and "--temp 0.3" in dry.stdout and "sk-cli-secret-99" not in dry.stdout
    assert "memory: fits: needs" in dry.stdout and "KV cache (4096 tokens, f16)" in dry.stdout
    huge = cli("launch", "--kind", "llamacpp", "--model", str(smollm2_gguf), "--name", "cli-huge", "ctx_size=16777216",
               check=False)
    assert huge.returncode == 1 and "does not fit: host RAM: needs" in huge.stderr and "--force" in huge.stderr
    waited = cli("launch", "--kind", "llamacpp", "--model", str(smollm2_gguf), "--name", "cli-smol", "--wait",
                 "threads=2")
    assert "loaded in" in waited.stderr and "loading weights" in waited.stderr  # the phases and their times
    listed = json.loads(cli("list", "--json").stdout)
    assert any(d["name"] == "cli-smol" and d["status"] in ("active", "idle") for d in listed)
    status = json.loads(cli("status", "cli-smol", "--json").stdout)
    for key in ("status", "endpoint_url", "api_base", "created_at", "started_at"):
        assert key in status
    out_file = tmp_path / "cli.json"
    cli("export", "cli-smol", "-o", str(out_file))
    assert json.loads(out_file.read_text())["name"] == "cli-smol"
    cli("clone", "cli-smol", "cli-clone", "--no-launch", "top_k=5")
    assert json.loads(cli("export", "cli-clone").stdout)["top_k"] == 5
    assert "starting llama-server" in cli("logs", "cli-smol", "--tail", "500").stdout
    cli("stop", "cli-smol")
    assert json.loads(cli("status", "cli-smol", "--json").stdout)["status"] == "stopped"
    bad = cli("launch", "--kind", "llamacpp", "--model", "m", "--name", "bad", "split_mode=diag", check=False)
    assert bad.returncode == 1 and "split_mode" in bad.stderr and "Traceback" not in bad.stderr
    imported_file = tmp_path / "imp.json"
    imported_file.write_text(json.dumps({**json.loads(out_file.read_text()), "name": "cli-imported"}))
    cli("import", str(imported_file), "--no-launch")
    for name in ("cli-smol", "cli-clone", "cli-imported"):
        cli("delete", name)
    with pytest.raises(ModelDeployError):
        jupyter_server.client().get("cli-smol")


def test_fallback_llama_cpp_python_server(smollm2_gguf: Path, tmp_path: Path) -> None:
    """Without llama-server, llama-cpp-python's server runs the model and the status says what it lacks."""
    server = JupyterProcess(tmp_path / "jupyter-fallback", extra_args=["--ModelDeployApp.llamacpp_engine=llama-cpp-python"])
    server.start()
    try:
        client = server.client()
        record = launch(client, smollm2_gguf, "fallback-smol")
        record = wait_status(client, record["id"], {"active", "idle"}, timeout=180)
        assert record["engine"]["program"] == "llama_cpp.server"
        assert any("one request at a time" in note for note in record["engine"]["notes"])
        oai = openai_client(record)
        chat = oai.chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1", max_tokens=5,
                                           messages=[{"role": "user", "content": "Hello"}])
        assert chat.choices[0].message.content is not None
        assert chat.usage is not None and chat.usage.completion_tokens > 0
        assert httpx.get(record["api_base"] + "/models").status_code == 401
        client.delete(record["id"])
    finally:
        server.stop()
