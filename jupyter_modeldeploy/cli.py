"""`jupyter modeldeploy ...`: the command line over the REST API, plus engine installs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import formats
from .benchmark.runner import DEFAULT_PROMPT
from .client import ModelDeployClient, ModelDeployError
from .config import describe_errors
from .progress_bar import ProgressPrinter


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`field=value` pairs (dotted fields nest: `models.0.pooling=cls` is not a list index, use a JSON file)."""
    try:
        return formats.parse_assignments(items)
    except formats.AssignmentError as exc:
        raise ModelDeployError(str(exc)) from None


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else formats.format_duration(seconds)


def _table(records: list[dict[str, Any]]) -> str:
    rows = [("ID", "NAME", "KIND", "STATUS", "IDLE", "MODEL", "ENDPOINT")]
    for r in records:
        model = r.get("model") or ",".join(m["name"] for m in r.get("models", []))
        idle = _age(r.get("idle_for_s")) if r.get("serving") else "-"
        rows.append((r["id"], r["name"], r["kind"], r["status"], idle, str(model)[-40:], r["api_base"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if args.config:
        text = sys.stdin.read() if args.config == "-" else Path(args.config).read_text()
        try:
            config = json.loads(text)
        except ValueError as exc:
            raise ModelDeployError(f"{args.config} is not valid JSON: {exc}") from None
    if args.kind:
        config["kind"] = args.kind
    if args.model:
        config["model"] = args.model
    if args.name:
        config["name"] = args.name
    config.update(parse_assignments(args.fields))
    if "kind" not in config:
        raise ModelDeployError("say which kind to launch: --kind llamacpp|llm|embedding (or a --config file)")
    if "name" not in config and "model" in config:
        config["name"] = Path(str(config["model"])).name.removesuffix(".gguf").replace("_", "-")[:60] or "model"
    return config


def _explain(exc: ModelDeployError) -> str:
    if not exc.errors:
        return f"error: {exc}"
    return f"error: {exc}\n  " + describe_errors(exc.errors, separator="\n  ")


def cmd_launch(client: ModelDeployClient, args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    if args.dry_run:
        plan = client.launch(config, dry_run=True)
        if args.json:
            _print_json(plan)
        else:
            import shlex

            print("command:", " ".join(shlex.quote(a) for a in plan["argv"]))
            for key, value in sorted(plan["env"].items()):
                print(f"env: {key}={value}")
            for note in plan.get("notes", []):
                print("note:", note)
            if plan.get("fit"):
                print(formats.describe_fit(plan["fit"]))
        return 0
    record = client.launch(config, force=args.force)
    if args.wait:
        printer = ProgressPrinter(sys.stderr)
        record = client.wait(record["id"], timeout=args.timeout, on_record=printer)
        printer.done(record)
    if args.json:
        _print_json(record)
    else:
        print(f"launched {record['name']} ({record['id']}): {record['status']}")
        print(f"API base: {record['api_base']}")
    return 0


def cmd_list(client: ModelDeployClient, args: argparse.Namespace) -> int:
    records = client.list()
    if args.json:
        _print_json(records)
    else:
        print(_table(records) if records else "no deployments")
    return 0


def cmd_status(client: ModelDeployClient, args: argparse.Namespace) -> int:
    if args.ref is None:
        data = client.status()
        _print_json(data)
        return 0
    record = client.get(args.ref)
    if args.json:
        _print_json(record)
        return 0
    print(f"{record['name']} ({record['id']}, {record['kind']}): {record['status']}")
    if record.get("status_reason"):
        print(f"reason: {record['status_reason']}")
    print(f"endpoint: {record['endpoint_url']}")
    print(f"API base: {record['api_base']}")
    print(f"placement: {formats.replica_summary(record)}")
    for line in formats.replica_lines(record):
        print(f"  {line}")
    for note in record.get("engine", {}).get("notes", []) + record.get("notices", []):
        print(f"note: {note}")
    key = None
    if args.new_key and not record.get("public"):
        token = client.create_token(deployment=record["id"], name=f"cli-{record['name']}")
        key = token["token"]
        print(f"new key {token['id']} (shown once): {key}")
    test = client.test_command(record["id"], key=key)
    print(f"test: {test['command']}")
    if test.get("key_source") == "missing":
        print(f"  no key in hand: run '{test['export']}' first, or 'jupyter modeldeploy status {args.ref} --new-key' "
              "for a command that carries a new key")
    return 0


def cmd_logs(client: ModelDeployClient, args: argparse.Namespace) -> int:
    if args.follow:
        try:
            for line in client.follow_logs(args.ref, tail=args.tail):
                print(line, flush=True)
        except KeyboardInterrupt:
            return 130
        return 0
    for line in client.logs(args.ref, tail=args.tail):
        print(line)
    return 0


def cmd_stop(client: ModelDeployClient, args: argparse.Namespace) -> int:
    record = client.stop(args.ref)
    print(f"{record['name']}: {record['status']}")
    return 0


def cmd_relaunch(client: ModelDeployClient, args: argparse.Namespace) -> int:
    record = client.relaunch(args.ref)
    if args.wait:
        record = client.wait(record["id"], timeout=args.timeout)
    print(f"{record['name']}: {record['status']}")
    return 0


def cmd_delete(client: ModelDeployClient, args: argparse.Namespace) -> int:
    client.delete(args.ref)
    print(f"deleted {args.ref}")
    return 0


def cmd_register_ai(client: ModelDeployClient, args: argparse.Namespace) -> int:
    answer = client.register_ai(args.ref, args.version)
    selected = f"; selected: {', '.join(answer['selected'])}" if answer.get("selected") else ""
    print(f"jupyter-ai {answer['version']}.x models: {', '.join(m['model_id'] for m in answer['models'])} "
          f"(in jupyter-ai's {answer['config']}{selected})")
    return 0


def cmd_unregister_ai(client: ModelDeployClient, args: argparse.Namespace) -> int:
    print(f"{args.ref}: {client.unregister_ai(args.ref)['removed']} jupyter-ai model(s) removed")
    return 0


def cmd_export(client: ModelDeployClient, args: argparse.Namespace) -> int:
    data = client.export(args.ref, include_secrets=args.include_secrets)
    text = json.dumps(data, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_import(client: ModelDeployClient, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ModelDeployError(f"{args.file} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ModelDeployError(f"{args.file} must hold a JSON object")
    config.update(parse_assignments(args.fields))
    record = client.import_config(config, start=not args.no_launch)
    print(f"imported {record['name']} ({record['id']}): {record['status']}")
    return 0


def cmd_clone(client: ModelDeployClient, args: argparse.Namespace) -> int:
    record = client.clone(args.ref, args.name, parse_assignments(args.fields), start=not args.no_launch,
                          include_secrets=not args.without_secrets)
    print(f"cloned into {record['name']} ({record['id']}): {record['status']}")
    return 0


QUOTA_FLAGS = ("requests_per_minute", "tokens_per_minute", "max_in_flight", "daily_tokens")


def _quota_args(args: argparse.Namespace) -> dict[str, int] | None:
    quotas = {name: getattr(args, name) for name in QUOTA_FLAGS if getattr(args, name) is not None}
    return quotas or None


def cmd_token(client: ModelDeployClient, args: argparse.Namespace) -> int:
    if args.token_cmd == "create":
        info = client.create_token(
            deployment=args.deployment, project=args.project, name=args.name, expires_in_s=args.expires_in,
            role=args.role, models=args.model or None, quotas=_quota_args(args),
        )
        if args.json:
            _print_json(info)
        else:
            print(f"token {info['id']} (shown once): {info['token']}")
    elif args.token_cmd == "list":
        tokens = client.tokens()
        if args.json:
            _print_json(tokens)
        for t in tokens if not args.json else []:
            scope = f"deployment {t['deployment_id']}" if t["deployment_id"] else f"project {t['project']}"
            expired = t["expires_at"] is not None and t["expires_at"] < time.time()
            state = "revoked" if t["revoked_at"] else ("expired" if expired else "valid")
            models = f" models={','.join(t['models'])}" if t.get("models") else ""
            print(f"{t['id']}  {t['prefix']}...  {scope}  {t.get('role', 'inference')}{models}  {state}  {t.get('name') or ''}")
    elif args.token_cmd == "update":
        changes: dict[str, object] = {k: v for k, v in (("name", args.name), ("expires_in_s", args.expires_in)) if v}
        if args.no_expiry:
            changes["no_expiry"] = True
        if args.no_quotas:
            changes["quotas"] = {}
        elif _quota_args(args):
            changes["quotas"] = _quota_args(args)
        info = client.update_token(args.token_id, **changes)
        if args.json:
            _print_json(info)
        else:
            print(f"updated {info['id']}")
    else:
        client.revoke_token(args.token_id)
        print(f"revoked {args.token_id}")
    return 0


def cmd_adapter(client: ModelDeployClient, args: argparse.Namespace) -> int:
    if args.adapter_cmd == "add":
        record = client.add_adapter(args.ref, args.name, args.path)
    else:
        record = client.remove_adapter(args.ref, args.name)
    print(f"{record['name']} serves: {', '.join(m['name'] for m in record['models'])}")
    return 0


# The engines' own installer programs: the CLI runs them, it does not import the engines.
INSTALLERS = {"llamacpp": "jupyter_modeldeploy.engines.llamacpp_install", "llm": "jupyter_modeldeploy.engines.vllm_install"}


def installer_argv(kind: str, *, force: bool = False, backend: str | None = None, source: str | None = None,
                   cuda_arch: str | None = None) -> list[str]:
    """The command line of an engine's installer (`python -m jupyter_modeldeploy.engines.<kind>_install`).

    llamacpp only: `source` builds from that llama.cpp tree, `cuda_arch` for those CUDA architectures only."""
    argv = [sys.executable, "-m", INSTALLERS[kind]]
    if force:
        argv.append("--force")
    if kind == "llamacpp":
        for flag, value in (("--backend", backend), ("--source", source), ("--cuda-arch", cuda_arch)):
            if value:
                argv += [flag, value]
    return argv


def cmd_bench(client: ModelDeployClient, args: argparse.Namespace) -> int:
    """A concurrency sweep through the gateway; prints each step, saves the result, exports on request."""
    from .benchmark import results, runner

    if args.export:
        saved = [r for r in results.load_all() if not args.name or r.get("deployment") == args.name]
        print(results.to_csv(saved) if args.export == "csv" else results.to_json(saved), end="")
        return 0
    if not args.name:
        raise ModelDeployError("say which deployment to benchmark (or --export csv|json for saved results)")
    try:
        settings = runner.Settings(prompt=args.prompt, max_tokens=args.max_tokens, max_concurrency=args.max_concurrency,
                                   requests_per_client=args.requests_per_client)
    except runner.BenchmarkError as exc:
        raise ModelDeployError(str(exc)) from None

    def show(step: Any) -> None:
        if not args.json:
            print(formats.describe_step(step.to_json()), flush=True)

    try:
        result = runner.benchmark(client, args.name, settings, key=args.key, on_step=show)
    except runner.BenchmarkError as exc:
        raise ModelDeployError(str(exc)) from None
    if args.json:
        _print_json(result)
    else:
        print(f"saved: {result['file']}")
    return 0


def cmd_install_engine(args: argparse.Namespace) -> int:
    if args.kind in INSTALLERS:
        argv = installer_argv(args.kind, force=args.force, backend=args.backend, source=args.source,
                              cuda_arch=args.cuda_arch)
        code = subprocess.run(argv).returncode
        if code or args.kind != "llm":
            return code
        found = subprocess.run([sys.executable, "-m", INSTALLERS["llm"], "--print-python"], capture_output=True, text=True)
        print(f"vLLM environment ready: {found.stdout.strip()}")
        return found.returncode
    import importlib.util

    if importlib.util.find_spec("sentence_transformers") is None:
        print("install the embedding engine with: pip install 'jupyter-modeldeploy[embedding]'")
        return 1
    print("sentence-transformers is installed: the embedding engine is ready")
    return 0


def cmd_ray(args: argparse.Namespace) -> int:
    """A local Ray cluster for trying `placement.target: ray`: start, stop, status."""
    from . import ray_local

    try:
        if args.ray_cmd == "start":
            cluster = ray_local.start(nodes=args.nodes, cpus_per_node=args.cpus_per_node, port=args.port)
            print(f"Ray cluster at {cluster.address}: a head and {args.nodes} node(s) "
                  f"(node_0 .. node_{args.nodes - 1}, {args.cpus_per_node:g} CPU(s) each)")
            print(f"serve on it with: jupyter lab --ModelDeployApp.ray_address={cluster.address}")
            return 0
        if args.ray_cmd == "stop":
            stopped = ray_local.stop()
            print(f"stopped {stopped} node(s)" if stopped else "no local cluster runs")
            return 0
        cluster = ray_local.load_state()
        if cluster is None or not cluster.alive():
            print("no local cluster runs ('jupyter modeldeploy ray start' starts one)")
            return 1
        print(f"Ray cluster at {cluster.address}: {len(cluster.alive())} of {len(cluster.nodes)} node process(es) "
              f"running, {ray_local.node_count(cluster.address)} node(s) alive in Ray")
        return 0
    except ray_local.LocalClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jupyter modeldeploy", description="Model deployments served from Jupyter.")
    parser.add_argument("--url", help="Jupyter server URL (default: JUPYTER_SERVER_URL or the running server)")
    parser.add_argument("--token", help="Jupyter token (default: JUPYTER_TOKEN or the running server's)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("launch", help="launch a deployment")
    p.add_argument("--config", "-c", help="configuration JSON file ('-' for stdin)")
    p.add_argument("--kind", choices=["llm", "llamacpp", "embedding"])
    p.add_argument("--model")
    p.add_argument("--name")
    p.add_argument("--dry-run", action="store_true", help="validate and print the engine command; start nothing")
    p.add_argument("--force", action="store_true", help="launch even when the fit check says it does not fit")
    p.add_argument("--wait", action="store_true", help="wait until the deployment serves")
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("fields", nargs="*", metavar="field=value")
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("list", help="list deployments")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("status", help="one deployment's status (or the server's, without a name)")
    p.add_argument("ref", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("--new-key", action="store_true", help="create a key for the deployment and put it in the test command")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("logs", help="a deployment's console")
    p.add_argument("ref")
    p.add_argument("--tail", type=int, default=200)
    p.add_argument("--follow", "-f", action="store_true")
    p.set_defaults(func=cmd_logs)

    for name, func, text in (("stop", cmd_stop, "stop a deployment"), ("delete", cmd_delete, "stop and forget")):
        p = sub.add_parser(name, help=text)
        p.add_argument("ref")
        p.set_defaults(func=func)

    p = sub.add_parser("register-ai", help="make a deployment's models jupyter-ai models, with a key of their own")
    p.add_argument("ref")
    p.add_argument("--version", type=int, choices=(2, 3), default=None,
                   help="jupyter-ai's major version (default: the server's choice, the installed one)")
    p.set_defaults(func=cmd_register_ai)
    p = sub.add_parser("unregister-ai", help="remove a deployment's jupyter-ai models and revoke their key")
    p.add_argument("ref")
    p.set_defaults(func=cmd_unregister_ai)

    p = sub.add_parser("relaunch", help="start a stopped deployment again")
    p.add_argument("ref")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--timeout", type=float, default=900.0)
    p.set_defaults(func=cmd_relaunch)

    p = sub.add_parser("export", help="print a deployment's configuration as JSON")
    p.add_argument("ref")
    p.add_argument("--output", "-o")
    p.add_argument("--include-secrets", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="launch from an exported configuration")
    p.add_argument("file")
    p.add_argument("--no-launch", action="store_true")
    p.add_argument("fields", nargs="*", metavar="field=value")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("clone", help="a new deployment from another's configuration")
    p.add_argument("ref")
    p.add_argument("name")
    p.add_argument("--no-launch", action="store_true")
    p.add_argument("--without-secrets", action="store_true", help="leave the API key and Hugging Face token behind")
    p.add_argument("fields", nargs="*", metavar="field=value")
    p.set_defaults(func=cmd_clone)

    p = sub.add_parser("token", help="generate, list and revoke API tokens")
    tsub = p.add_subparsers(dest="token_cmd", required=True)
    t = tsub.add_parser("create")
    scope = t.add_mutually_exclusive_group(required=True)
    scope.add_argument("--deployment")
    scope.add_argument("--project")
    t.add_argument("--name")
    t.add_argument("--expires-in", type=float, help="seconds")
    t.add_argument("--role", choices=("inference", "read"), default="inference")
    for flag in QUOTA_FLAGS:
        t.add_argument("--" + flag.replace("_", "-"), type=int, help="quota (default: no limit)")
    t.add_argument("--model", action="append", help="a model the key may call (repeat; default: every model)")
    t.add_argument("--json", action="store_true")
    t = tsub.add_parser("list")
    t.add_argument("--json", action="store_true")
    t = tsub.add_parser("update", help="change a token's label, expiry or quotas (effective for its next request)")
    t.add_argument("token_id")
    t.add_argument("--name")
    t.add_argument("--expires-in", type=float, help="seconds from now")
    t.add_argument("--no-expiry", action="store_true")
    t.add_argument("--no-quotas", action="store_true", help="remove every quota")
    for flag in QUOTA_FLAGS:
        t.add_argument("--" + flag.replace("_", "-"), type=int, help="new quotas replace the old ones")
    t.add_argument("--json", action="store_true")
    t = tsub.add_parser("revoke")
    t.add_argument("token_id")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("adapter", help="load or unload a LoRA adapter on a running llm deployment")
    asub = p.add_subparsers(dest="adapter_cmd", required=True)
    a = asub.add_parser("add")
    a.add_argument("ref")
    a.add_argument("name")
    a.add_argument("path")
    a = asub.add_parser("remove")
    a.add_argument("ref")
    a.add_argument("name")
    p.set_defaults(func=cmd_adapter)

    p = sub.add_parser("bench", help="a concurrency sweep (1, 2, 4, … N clients) through the gateway; saved")
    p.add_argument("name", nargs="?", help="the deployment (omit with --export)")
    p.add_argument("--max-concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=64, help="output length of each request")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--requests-per-client", type=int, default=2)
    p.add_argument("--key", help="an API key for the endpoint (default: a token made for the sweep, then revoked)")
    p.add_argument("--export", choices=["csv", "json"], help="print the saved results (of NAME, or all) instead")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("install-engine", help="build or install an engine (cached per version)")
    p.add_argument("kind", choices=["llamacpp", "llm", "embedding"])
    p.add_argument("--force", action="store_true")
    p.add_argument("--backend", choices=["cpu", "cuda"], help="llamacpp: force a backend")
    p.add_argument("--source", help="llamacpp: build from this llama.cpp source tree (nothing downloaded)")
    p.add_argument("--cuda-arch", help="llamacpp: CMAKE_CUDA_ARCHITECTURES of a CUDA build (e.g. 90), those only")
    p.set_defaults(func=None)

    p = sub.add_parser("ray", help="a local Ray cluster to try placement.target 'ray' (start, stop, status)")
    rsub = p.add_subparsers(dest="ray_cmd", required=True)
    r = rsub.add_parser("start", help="start a head and worker nodes on this machine")
    r.add_argument("--nodes", type=int, default=2, help="worker nodes (default 2)")
    r.add_argument("--cpus-per-node", type=float, default=1.0, help="CPUs each worker node offers (default 1)")
    r.add_argument("--port", type=int, default=6389, help="the head's port (default 6389)")
    rsub.add_parser("stop", help="stop the local cluster")
    rsub.add_parser("status", help="is the local cluster running")
    p.set_defaults(func=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # field=value pairs may follow options (`clone a b --no-launch top_k=5`): argparse leaves
    # them over, and they join the command's fields.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "fields") and all("=" in e and not e.startswith("-") for e in extra):
            args.fields = [*args.fields, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "install-engine":
            return cmd_install_engine(args)
        if args.command == "ray":
            return cmd_ray(args)
        client = ModelDeployClient(args.url, args.token)
        return int(args.func(client, args) or 0)
    except ModelDeployError as exc:
        print(_explain(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
