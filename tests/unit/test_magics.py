"""`%deploy` in a real IPython shell over a fake REST client: parsing, commands, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from jupyter_modeldeploy.client import ModelDeployError
from jupyter_modeldeploy.config import export_config, parse_config
from jupyter_modeldeploy.formats import parse_value
from jupyter_modeldeploy.magics import (
    DeployMagicError,
    DeploymentHandle,
    load_config_text,
    parse_assignments,
    register,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class FakeClient:
    """Enough of `ModelDeployClient` for the magic."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.tokens: list[dict[str, Any]] = []
        self.stopped: list[str] = []

    def launch(self, config: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        try:
            parsed = parse_config(config)
        except ValueError as exc:
            raise ModelDeployError(f"invalid configuration: {exc}", 422, exc.errors) from None
        rid = f"id{len(self.records)}"
        rec = {"id": rid, "name": parsed.name, "kind": parsed.kind, "status": "loading", "public": parsed.public,
               "api_base": f"http://127.0.0.1:1/modeldeploy/endpoints/{rid}/v1", "config": export_config(parsed),
               "idle_for_s": 0.0}
        self.records[rid] = rec
        return rec

    def _find(self, ref: str) -> dict[str, Any]:
        for r in self.records.values():
            if ref in (r["id"], r["name"]):
                return r
        raise ModelDeployError(f"no deployment {ref!r}", 404)

    def get(self, ref: str) -> dict[str, Any]:
        return self._find(ref)

    def wait(self, ref: str, timeout: float = 900.0, on_record: Any = None) -> dict[str, Any]:
        rec = self._find(ref)
        if on_record is not None:  # as the server shows a load: two phases, then serving
            for phase, percent in (("starting engine", None), ("loading weights", 50.0)):
                on_record({**rec, "status": "loading", "progress": {
                    "phase": phase, "percent": percent, "phase_elapsed_s": 1.0, "elapsed_s": 2.0, "bytes_done": None,
                    "bytes_total": None, "rate_bytes_per_s": None, "phases": []}})
        rec["status"] = "active"
        rec["status_history"] = [{"status": "active", "at": 0.0, "reason": None, "phases": [
            {"phase": "starting engine", "started_at": 0.0, "elapsed_s": 0.5},
            {"phase": "loading weights", "started_at": 0.5, "elapsed_s": 1.25}]}]
        return rec

    def list(self) -> list[dict[str, Any]]:
        return list(self.records.values())

    def validate(self, config: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "config": config, "notices": [], "fit": None}

    def stop(self, ref: str) -> dict[str, Any]:
        rec = self._find(ref)
        rec["status"] = "stopped"
        self.stopped.append(rec["id"])
        return rec

    def export(self, ref: str) -> dict[str, Any]:
        return self._find(ref)["config"]

    def logs(self, ref: str, tail: int = 200) -> list[str]:
        self._find(ref)
        return ["a", "b", "c"][-tail:]

    def schemas(self) -> dict[str, Any]:
        from jupyter_modeldeploy.config import all_schemas

        return all_schemas()

    def create_token(self, **kwargs: Any) -> dict[str, Any]:
        self.tokens.append(kwargs)
        return {"id": "t1", "token": "md-token-1"}


@pytest.fixture
def shell() -> tuple[InteractiveShell, FakeClient]:
    ip = InteractiveShell.instance()
    client = FakeClient()
    register(ip, client=client)
    yield ip, client
    InteractiveShell.clear_instance()


def test_values_parse_as_json_else_strings() -> None:
    assert parse_value("2") == 2 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("[0,1]") == [0, 1] and parse_value('{"A": "1"}') == {"A": "1"}
    assert parse_value("/models/x.gguf") == "/models/x.gguf" and parse_value("null") is None
    assert parse_assignments(["a=1", "b=x=y", "env.A=1"]) == {"a": 1, "b": "x=y", "env": {"A": 1}}
    with pytest.raises(DeployMagicError, match="field=value"):
        parse_assignments(["oops"])
    assert load_config_text("kind: llamacpp\nname: y\n") == {"kind": "llamacpp", "name": "y"}
    assert load_config_text('{"name": "z"}') == {"name": "z"}
    with pytest.raises(DeployMagicError):
        load_config_text("- a list")


def test_launch_returns_a_handle_with_an_openai_client(shell: tuple[InteractiveShell, FakeClient]) -> None:
    ip, client = shell
    handle = ip.run_line_magic("deploy", "llamacpp model=/m/smol.gguf name=smol ctx_size=1024 gpus=[0] top_p=0.5")
    assert isinstance(handle, DeploymentHandle)
    config = client.records[handle.id]["config"]
    assert config["ctx_size"] == 1024 and config["gpus"] == [0] and config["top_p"] == 0.5
    assert handle.record["status"] == "loading"
    assert handle.wait().record["status"] == "active"
    waited = ip.run_line_magic("deploy", "llamacpp --wait model=/m/smol.gguf name=waited")
    assert waited.record["status"] == "active"
    oai = handle.client()
    assert str(oai.base_url).rstrip("/") == handle.api_base and oai.api_key == "md-token-1"
    assert client.tokens == [{"deployment": handle.id, "name": "notebook-smol"}]
    handle.client()
    assert len(client.tokens) == 1  # one token per handle
    given = ip.run_line_magic("deploy", "llamacpp model=/m/smol.gguf name=keyed api_key=sk-mine")
    assert given.client().api_key == "sk-mine" and len(client.tokens) == 1
    assert "smol" in repr(handle) and "smol" in handle._repr_html_()


def test_config_file_and_cell_body(shell: tuple[InteractiveShell, FakeClient], tmp_path: Path) -> None:
    ip, client = shell
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"kind": "llamacpp", "name": "from-file", "model": "/m.gguf"}))
    handle = ip.run_line_magic("deploy", f"--config {path} threads=2")
    assert handle.name == "from-file" and client.records[handle.id]["config"]["threads"] == 2
    body = "kind: llamacpp\nname: x\nmodel: /m.gguf\nparallel: 2\n"
    yaml_handle = ip.run_cell_magic("deploy", "name=from-yaml", body)
    assert yaml_handle.name == "from-yaml" and client.records[yaml_handle.id]["config"]["parallel"] == 2
    json_handle = ip.run_cell_magic("deploy", "", '{"kind": "embedding", "name": "e", "models": [{"model": "/m"}]}')
    assert client.records[json_handle.id]["kind"] == "embedding"


def test_commands(shell: tuple[InteractiveShell, FakeClient], capsys: pytest.CaptureFixture[str],
                  tmp_path: Path) -> None:
    ip, _ = shell
    ip.run_line_magic("deploy", "llamacpp model=/m.gguf name=smol")
    ip.run_line_magic("deploy", "list")
    out = capsys.readouterr().out
    assert "NAME" in out and "smol" in out and "loading" in out
    assert ip.run_line_magic("deploy", "export smol")["name"] == "smol"
    ip.run_line_magic("deploy", f"export smol {tmp_path / 'e.json'}")
    assert json.loads((tmp_path / "e.json").read_text())["name"] == "smol"
    ip.run_line_magic("deploy", "logs smol 2")
    assert capsys.readouterr().out.splitlines()[-2:] == ["b", "c"]
    ip.run_line_magic("deploy", "stop smol")
    assert "smol: stopped" in capsys.readouterr().out
    assert ip.run_line_magic("deploy", "get smol").status == "stopped"
    form = ip.run_line_magic("deploy", "form embedding")
    assert form.kind_pick.value == "embedding"


def test_errors_are_one_line(shell: tuple[InteractiveShell, FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    ip, _ = shell
    for line, expected in [
        ("stop nope", "no deployment 'nope'"),
        ("llamacpp name=x", "model"),
        ("llamacpp model=/m.gguf name='bad name'", "name:"),
        ("frobnicate", "unknown command or kind 'frobnicate'"),
        ("--config /nonexistent.json", "no such file"),
        ("form nokind", "unknown kind"),
    ]:
        result = ip.run_cell(f"%deploy {line}")
        assert isinstance(result.error_in_exec, DeployMagicError), line
        rendered = result.error_in_exec._render_traceback_()
        assert len(rendered) == 1 and rendered[0].startswith("%deploy: ") and expected in rendered[0], rendered
        output = capsys.readouterr()
        shown = (output.out + output.err).strip()
        assert "Traceback" not in shown and expected in shown, shown


def test_wait_shows_the_loading_phases_and_their_times(shell: tuple[InteractiveShell, FakeClient],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    ip, _client = shell
    ip.run_line_magic("deploy", "llamacpp --wait model=/m/smol.gguf name=shown")
    out = capsys.readouterr().out
    assert "\rstarting engine  (1 s in this phase, 2 s in all)" in out
    assert "loading weights  [############............]  50%" in out
    assert out.endswith("loaded in 1.8 s: starting engine 0.5 s, loading weights 1.2 s\n")


def test_the_cli_prints_a_line_per_phase_off_a_terminal() -> None:
    import io

    from jupyter_modeldeploy.progress_bar import ProgressPrinter

    stream = io.StringIO()
    printer = ProgressPrinter(stream)
    record = {"progress": {"phase": "downloading", "percent": 40.0, "phase_elapsed_s": 3.0, "elapsed_s": 4.0,
                           "bytes_done": 40 * 1024**2, "bytes_total": 100 * 1024**2, "rate_bytes_per_s": 13 * 1024**2,
                           "phases": []}}
    printer(record)
    printer(record)  # the same phase again: no new line
    assert stream.getvalue() == ("downloading  [##########..............]  40%  40 MiB of 100 MiB  at 13 MiB/s  "
                                 "(3 s in this phase, 4 s in all)\n")


def test_bench_runs_a_sweep_with_the_options_given(shell: tuple[InteractiveShell, FakeClient],
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from jupyter_modeldeploy.benchmark import runner
    from jupyter_modeldeploy.benchmark.sweep import Sample, summarize

    ip, client = shell
    asked: list[tuple[str, runner.Settings, str | None]] = []

    def fake_benchmark(c: Any, ref: str, settings: runner.Settings, *, key: str | None = None,
                       on_step: Any = None) -> dict[str, Any]:
        assert c is client
        asked.append((ref, settings, key))
        on_step(summarize(1, [Sample(0.0, 1.0, [0.25, 0.5], 2)]))
        return {"id": "b-1", "steps": [], "file": "b-1.json"}

    monkeypatch.setattr(runner, "benchmark", fake_benchmark)
    result = ip.run_line_magic("deploy", "bench smol max_concurrency=4 max_tokens=16 prompt=Hi key=sk-k")
    assert result["id"] == "b-1"
    assert asked == [("smol", runner.Settings(prompt="Hi", max_tokens=16, max_concurrency=4), "sk-k")]
    out = capsys.readouterr().out
    assert "  1 clients  TTFT p50 250.0 ms" in out and "saved: b-1.json" in out
    with pytest.raises(Exception, match="bench: max_concurrency must be between 1 and 256"):
        ip.run_line_magic("deploy", "bench smol max_concurrency=0")
    with pytest.raises(Exception, match=r"bench: .*unexpected keyword argument 'colour'"):
        ip.run_line_magic("deploy", "bench smol colour=red")
