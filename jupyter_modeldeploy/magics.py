"""The `%deploy` / `%%deploy` magic: launch, list, stop, inspect deployments from a notebook.

    %load_ext jupyter_modeldeploy
    smol = %deploy llamacpp model=/models/smol.gguf name=smol ctx_size=2048 --wait
    smol.client().chat.completions.create(...)
    %deploy --config smol.json          # an exported configuration (JSON or YAML)
    %%deploy                            # a configuration in the cell body (JSON or YAML)
    %deploy list | stop <n> | logs <n> | export <n> | dashboard <n> | form <kind> | get <n>
    %deploy usage [<n>] [key=<key id>] [model=<m>] [since=<unix s>]   # per-key usage, a DataFrame
    %deploy requests [<n>] [key=<key id>] [limit=<rows>] [bodies=true]  # the request log, a DataFrame
    %deploy replay <request id> [to=<deployment>] [model=<m>]          # send a captured request again
    %deploy register-ai <n> [2|3] | unregister-ai <n>                  # as jupyter-ai (2.x/3.x) models, or not
    %deploy bench <n> max_concurrency=8 max_tokens=64 prompt="..."   # a concurrency sweep, saved
    %deploy share <n> [users=bob,carol] [groups=ml-team] [role=read] [priority=batch] [requests_per_minute=30]
                                        # who on the JupyterHub may get a key, and the share page's URL

Values in `field=value` are JSON when they parse as JSON, else strings; `--wait` blocks until
the deployment serves. Errors are one readable line, not a traceback.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from . import formats
from .client import ModelDeployClient, ModelDeployError
from .progress_bar import ProgressPrinter

COMMANDS = ("list", "stop", "logs", "export", "dashboard", "form", "get", "wait", "delete", "relaunch", "usage", "requests",
            "replay", "register-ai", "unregister-ai", "bench", "share",
            "help")
USAGE_FILTERS = ("key", "model", "since", "until")
SHARE_QUOTAS = ("requests_per_minute", "tokens_per_minute", "max_in_flight", "daily_tokens")


class DeployMagicError(Exception):
    """A `%deploy` error; IPython shows it as one line (no traceback)."""

    def _render_traceback_(self) -> list[str]:
        return [f"%deploy: {self}"]


def parse_assignments(tokens: list[str]) -> dict[str, Any]:
    """`a=1 b=x c.d=2` -> `{"a": 1, "b": "x", "c": {"d": 2}}` (the CLI reads them the same way)."""
    try:
        return formats.parse_assignments(tokens)
    except formats.AssignmentError as exc:
        raise DeployMagicError(str(exc)) from None


def load_config_text(text: str, source: str = "configuration") -> dict[str, Any]:
    """A configuration from JSON or YAML text."""
    text = text.strip()
    if not text:
        raise DeployMagicError(f"the {source} is empty")
    try:
        data = json.loads(text)
    except ValueError:
        try:
            import yaml

            data = yaml.safe_load(text)
        except Exception as exc:
            raise DeployMagicError(f"the {source} is neither JSON nor YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise DeployMagicError(f"the {source} must be an object of fields")
    return data


def _describe(exc: ModelDeployError) -> str:
    if exc.errors:
        return "invalid configuration: " + "; ".join(
            f"{e.get('field')}: {e.get('message')}" + (f" (allowed: {', '.join(map(str, e['allowed']))})"
                                                       if e.get("allowed") and isinstance(e["allowed"], list)
                                                       else "")
            for e in exc.errors
        )
    return str(exc)


class DeploymentHandle:
    """A deployment launched or found by `%deploy`: its record, an OpenAI client, actions."""

    def __init__(self, client: ModelDeployClient, record: dict[str, Any], *, api_key: str | None = None):
        self._client = client
        self.record = record
        self._api_key = api_key

    @property
    def id(self) -> str:
        """The deployment's id."""
        return self.record["id"]

    @property
    def name(self) -> str:
        """The deployment's name."""
        return self.record["name"]

    @property
    def status(self) -> str:
        """The current status (asks the server)."""
        return self.refresh()["status"]

    @property
    def api_base(self) -> str:
        """The OpenAI-compatible base URL of the endpoint (ends in `/v1`)."""
        return self.record["api_base"]

    def refresh(self) -> dict[str, Any]:
        """Reload the record."""
        self.record = self._client.get(self.id)
        return self.record

    def wait(self, timeout: float = 900.0, *, show_progress: bool = True) -> DeploymentHandle:
        """Block until it serves (active or idle), showing the loading phases; raises if it fails."""
        printer = ProgressPrinter(sys.stdout, redraw=True) if show_progress else None
        self.record = self._client.wait(self.id, timeout=timeout, on_record=printer)
        if printer is not None:
            printer.done(self.record)
        return self

    @property
    def api_key(self) -> str:
        """A key for the endpoint: the one given, else a token created for this deployment (once)."""
        if self._api_key is None:
            self._api_key = self._client.create_token(deployment=self.id, name=f"notebook-{self.name}")["token"]
        return self._api_key

    def client(self, **kwargs: Any) -> Any:
        """A ready `openai.OpenAI` client for the endpoint."""
        import openai

        key = "none" if self.record.get("public") and self._api_key is None else self.api_key
        return openai.OpenAI(base_url=self.api_base, api_key=key, **kwargs)

    def stop(self) -> dict[str, Any]:
        """Stop the engine; the updated record (it can be relaunched)."""
        self.record = self._client.stop(self.id)
        return self.record

    def relaunch(self) -> dict[str, Any]:
        """Start it again after a stop or failure; the updated record (`wait()` for it to serve)."""
        self.record = self._client.relaunch(self.id)
        return self.record

    def export(self) -> dict[str, Any]:
        """The configuration, secrets left out."""
        return self._client.export(self.id)

    def logs(self, tail: int = 200) -> list[str]:
        """The last `tail` lines of the engine console."""
        return self._client.logs(self.id, tail=tail)

    def metrics(self) -> dict[str, Any]:
        """The chart series and request totals (see `ModelDeployClient.metrics`)."""
        return self._client.metrics(self.id)

    def usage(self, **filters: Any) -> Any:
        """This deployment's exact per-key usage per minute, as a pandas DataFrame (`key`, `model`, `since`)."""
        return self._client.usage_frame(deployment=self.id, **filters)

    @property
    def test_command(self) -> str:
        """The curl command that tries the endpoint, carrying this handle's key when it has one."""
        return self._client.test_command(self.id, key=self._api_key)["command"]

    def chart(self, metric: str = "requests", **kwargs: Any) -> Any:
        """One live chart of this deployment (`requests`, `latency`, `tokens_per_s`, `cpu`, `memory`, ...)."""
        from .widgets.charts import LiveChart

        return LiveChart(self.id, metric, self._client, **kwargs)

    def dashboard(self, **kwargs: Any) -> Any:
        """The live dashboard widget of this deployment."""
        from .widgets.dashboard import Dashboard

        return Dashboard(self.id, self._client, api_key=self._api_key, **kwargs)

    def __repr__(self) -> str:
        from .formats import replica_lines, replica_summary

        r = self.record
        replicas = "".join(f"\n  {line}" for line in replica_lines(r))
        return (f"<deployment {r['name']} ({r['kind']}, {r['id']}): {r['status']} at {r.get('api_base')}, "
                f"{replica_summary(r)}>{replicas}")

    def _repr_html_(self) -> str:
        import html

        from .formats import replica_lines, replica_summary
        from .widgets.common import status_badge

        r = self.record
        replicas = "".join(f"<li>{html.escape(line)}</li>" for line in replica_lines(r))
        return (
            f"<b>{html.escape(r['name'])}</b> ({html.escape(r['kind'])}, {html.escape(r['id'])}) "
            f"{status_badge(r['status'])} — API base <code>{html.escape(str(r.get('api_base')))}</code> "
            f"— {html.escape(replica_summary(r))}" + (f"<ul>{replicas}</ul>" if replicas else "")
        )


class DeployMagic:
    """The state behind `%deploy`: one REST client, created on first use."""

    def __init__(self, client: ModelDeployClient | None = None):
        self._client = client
        self._wait = False

    @property
    def client(self) -> ModelDeployClient:
        if self._client is None:
            try:
                self._client = ModelDeployClient()
            except ModelDeployError as exc:
                raise DeployMagicError(str(exc)) from None
        return self._client

    def __call__(self, line: str, cell: str | None = None) -> Any:
        try:
            return self.run(line, cell)
        except DeployMagicError:
            raise
        except ModelDeployError as exc:
            raise DeployMagicError(_describe(exc)) from None
        except (OSError, ValueError) as exc:
            raise DeployMagicError(str(exc)) from None

    def run(self, line: str, cell: str | None = None) -> Any:
        try:
            tokens = shlex.split(line)
        except ValueError as exc:
            raise DeployMagicError(f"cannot parse the line: {exc}") from None
        self._wait = "--wait" in tokens
        tokens = [t for t in tokens if t != "--wait"]
        if cell is not None:
            config = load_config_text(cell, "cell body")
            config.update(parse_assignments(tokens))
            return self.launch(config)
        if not tokens or tokens[0] in ("help", "-h", "--help"):
            print(__doc__)
            return None
        head, rest = tokens[0], tokens[1:]
        if head == "--config":
            if not rest:
                raise DeployMagicError("--config needs a file")
            path = Path(rest[0]).expanduser()
            if not path.is_file():
                raise DeployMagicError(f"no such file: {path}")
            config = load_config_text(path.read_text(), str(path))
            config.update(parse_assignments(rest[1:]))
            return self.launch(config)
        if head in COMMANDS:
            return getattr(self, f"cmd_{head.replace('-', '_')}")(rest)
        kinds = self._kinds()
        if head in kinds:
            config = {"kind": head, **parse_assignments(rest)}
            return self.launch(config)
        raise DeployMagicError(
            f"unknown command or kind {head!r}; kinds: {', '.join(kinds)}; commands: {', '.join(COMMANDS)}"
        )

    def _kinds(self) -> tuple[str, ...]:
        from .config import KINDS

        return KINDS

    def _one(self, rest: list[str], what: str) -> str:
        if not rest:
            raise DeployMagicError(f"{what} needs a deployment name or id")
        return rest[0]

    def launch(self, config: dict[str, Any]) -> DeploymentHandle:
        api_key = config.get("api_key") if isinstance(config.get("api_key"), str) else None
        if "name" not in config:
            raise DeployMagicError("a deployment needs name=<name>")
        record = self.client.launch(config)
        handle = DeploymentHandle(self.client, record, api_key=api_key)
        return handle.wait() if self._wait else handle

    def cmd_help(self, rest: list[str]) -> None:
        print(__doc__)

    def cmd_list(self, rest: list[str]) -> None:
        from .formats import format_duration, replica_summary

        records = self.client.list()
        if not records:
            print("no deployments")
            return
        rows = [("NAME", "ID", "KIND", "STATUS", "PLACEMENT", "IDLE", "API BASE")]
        for r in records:
            idle = format_duration(r.get("idle_for_s")) if r.get("serving") else "-"
            rows.append((r["name"], r["id"], r["kind"], r["status"], replica_summary(r), idle, r.get("api_base", "")))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())

    def cmd_get(self, rest: list[str]) -> DeploymentHandle:
        return DeploymentHandle(self.client, self.client.get(self._one(rest, "get")))

    def cmd_wait(self, rest: list[str]) -> DeploymentHandle:
        return self.cmd_get(rest).wait()

    def cmd_stop(self, rest: list[str]) -> None:
        record = self.client.stop(self._one(rest, "stop"))
        print(f"{record['name']}: {record['status']}")

    def cmd_relaunch(self, rest: list[str]) -> DeploymentHandle:
        return DeploymentHandle(self.client, self.client.relaunch(self._one(rest, "relaunch")))

    def cmd_delete(self, rest: list[str]) -> None:
        ref = self._one(rest, "delete")
        self.client.delete(ref)
        print(f"{ref}: deleted")

    def cmd_logs(self, rest: list[str]) -> None:
        ref = self._one(rest, "logs")
        tail = int(rest[1]) if len(rest) > 1 and rest[1].isdigit() else 200
        print("\n".join(self.client.logs(ref, tail=tail)))

    def cmd_export(self, rest: list[str]) -> dict[str, Any]:
        ref = self._one(rest, "export")
        data = self.client.export(ref)
        if len(rest) > 1:
            Path(rest[1]).expanduser().write_text(json.dumps(data, indent=2) + "\n")
            print(f"wrote {rest[1]}")
        return data

    def cmd_share(self, rest: list[str]) -> dict[str, Any]:
        """Show a deployment's JupyterHub share, or replace it with the one given; returns the share's state."""
        ref = self._one(rest, "share")
        options = parse_assignments(rest[1:])
        if options:
            names = {field: [n for n in str(options.pop(field, "")).split(",") if n] for field in ("users", "groups")}
            quotas = {q: options.pop(q) for q in SHARE_QUOTAS if q in options}
            state = self.client.set_share(ref, **names, **options, **({"quotas": quotas} if quotas else {}))
        else:
            state = self.client.share(ref)
        print(formats.share_summary(state))
        return state

    def cmd_bench(self, rest: list[str]) -> dict[str, Any]:
        """A concurrency sweep through the gateway, printed step by step and saved; returns the result."""
        from .benchmark.runner import BenchmarkError, Settings, benchmark

        ref = self._one(rest, "bench")
        options = parse_assignments(rest[1:])
        key = options.pop("key", None)
        try:
            settings = Settings(**options)
            result = benchmark(self.client, ref, settings, key=key,
                               on_step=lambda step: print(formats.describe_step(step.to_json()), flush=True))
        except (BenchmarkError, TypeError) as exc:
            raise DeployMagicError(f"bench: {exc}") from None
        print(f"saved: {result['file']}")
        return result
    def _filters(self, command: str, rest: list[str], allowed: tuple[str, ...]) -> tuple[str | None, dict[str, Any]]:
        """A first word without `=` (a deployment, a request id), then `field=value` filters of `allowed`."""
        first = rest[0] if rest and "=" not in rest[0] else None
        filters = parse_assignments(rest[1:] if first else rest)
        unknown = sorted(set(filters) - set(allowed))
        if unknown:
            raise DeployMagicError(f"{command} takes {', '.join(allowed)}; not {', '.join(unknown)}")
        return first, filters

    def cmd_usage(self, rest: list[str]) -> Any:
        """Per-key usage per minute as a DataFrame: of one deployment (a first word), filtered by key=, model=, since=."""
        deployment, filters = self._filters("usage", rest, USAGE_FILTERS)
        return self.client.usage_frame(deployment=deployment, **filters)

    def cmd_requests(self, rest: list[str]) -> Any:
        """The request log as a DataFrame: of one deployment (a first word), filtered by key=, since=, limit=, bodies=."""
        deployment, filters = self._filters("requests", rest, ("key", "since", "limit", "bodies"))
        return self.client.requests_frame(deployment=deployment, **filters)

    def cmd_replay(self, rest: list[str]) -> Any:
        """Send a captured request again (to= another deployment, model= another model); returns the answer's JSON."""
        entry, options = self._filters("replay", rest, ("to", "model"))
        if entry is None or not entry.isdigit():
            raise DeployMagicError("replay needs the id of a logged request (see %deploy requests)")
        answer = self.client.replay(int(entry), **options)
        try:
            return answer.json()
        except ValueError:
            return answer.text

    def cmd_register_ai(self, rest: list[str]) -> None:
        ref = self._one(rest, "register-ai")
        version = rest[1] if len(rest) > 1 else None
        if version is not None and version not in ("2", "3"):
            raise DeployMagicError("register-ai <name> [2|3]: the jupyter-ai major version is 2 or 3")
        answer = self.client.register_ai(ref, int(version) if version else None)
        names = ", ".join(m["name"] for m in answer["models"])
        picked = f"; selected: {', '.join(answer['selected'])}" if answer.get("selected") else ""
        print(f"jupyter-ai {answer['version']}.x models: {names} (in jupyter-ai's {answer['config']}; "
              f"pick them in its model picker{picked})")

    def cmd_unregister_ai(self, rest: list[str]) -> None:
        ref = self._one(rest, "unregister-ai")
        print(f"{ref}: {self.client.unregister_ai(ref)['removed']} jupyter-ai model(s) removed")

    def cmd_dashboard(self, rest: list[str]) -> Any:
        from .widgets.dashboard import Dashboard

        return Dashboard(self._one(rest, "dashboard"), self.client)

    def cmd_form(self, rest: list[str]) -> Any:
        from .widgets.launch_form import LaunchForm

        if not rest:
            return LaunchForm(None, self.client)  # opens on the server's launch defaults
        kind = rest[0]
        if kind not in self._kinds():
            raise DeployMagicError(f"unknown kind {kind!r}; kinds: {', '.join(self._kinds())}")
        return LaunchForm(kind, self.client, values=parse_assignments(rest[1:]) or None)


def live_handles(client: ModelDeployClient) -> list[DeploymentHandle]:
    """Handles of every live deployment."""
    return [DeploymentHandle(client, r) for r in client.list() if r.get("live")]


def register(ipython: Any, client: ModelDeployClient | None = None) -> DeployMagic:
    """Register `%deploy` and `%%deploy` with an IPython shell."""
    magic = DeployMagic(client)
    ipython.register_magic_function(magic, magic_kind="line_cell", magic_name="deploy")
    return magic
