"""Command line of the embedding server: check the config, load every model, serve until SIGTERM.

A configuration that cannot work (a missing model, `splade` on a model without a
masked-LM head, a model that fails to load) ends the process with status 2 or 1 and a
one-line reason on stderr, before the server ever reports healthy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from ...config.embedding import EmbeddingConfig
from .loader import LaunchError, ModelRuntime, ModelSource, inspect_entry, pick_device

log = logging.getLogger("jupyter_modeldeploy.embedding_server")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The server's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m jupyter_modeldeploy.engines.embedding_server",
        description="Serve sentence-transformers embedding models and cross-encoders over OpenAI-, "
        "Cohere- and TEI-style HTTP APIs.",
    )
    parser.add_argument("--config", required=True, help="JSON file holding an exported embedding config")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (or --uds)")
    parser.add_argument("--uds", default=None, help="Unix socket to listen on instead of a TCP port (mode 0600)")
    parser.add_argument("--api-key-file", required=True, help="file holding the key every request must carry")
    args = parser.parse_args(argv)
    if args.port is None and args.uds is None:
        parser.error("one of --port or --uds is required")
    return args


def _fail(message: str, status: int) -> int:
    print(f"embedding server: {message}", file=sys.stderr, flush=True)
    return status


def _read_config(path: str) -> EmbeddingConfig:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LaunchError(f"cannot read config {path}: {exc}") from None
    try:
        return EmbeddingConfig.model_validate(data)
    except ValueError as exc:
        raise LaunchError("invalid config: " + " ".join(str(exc).split())) from None


def _read_key(path: str) -> str:
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise LaunchError(f"cannot read the API key file: {exc}") from None
    if not key:
        raise LaunchError("the API key file is empty")
    return key


def _setup_logging(config: EmbeddingConfig) -> None:
    level = "debug" if config.debug else config.log_level
    if config.disable_logs:
        level = "error"
    logging.basicConfig(
        level=getattr(logging, level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if level != "debug":
        for noisy in ("tornado.access", "sentence_transformers", "transformers", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


async def serve(
    config: EmbeddingConfig, sources: list[ModelSource], key: str, host: str, port: int | None, device: str,
    uds: str | None = None,
) -> int:
    """Listen, load every model (health says 503 meanwhile), then serve until SIGTERM or SIGINT."""
    import tornado.httpserver
    import tornado.netutil

    from .app import BODY_HARD_CAP_FACTOR, ServerState, make_app
    from .memory import MemoryManager
    from .metrics import Metrics
    from .service import ModelService

    metrics = Metrics()
    budget = int(config.max_cuda_memory_gib * 2**30) if config.max_cuda_memory_gib else None
    memory: MemoryManager = MemoryManager(
        budget,
        "cpu_offload" if config.cpu_offload else "disk_swap",
        on_change=lambda name: metrics.update_memory(memory, name),
    )
    keep = config.cuda_memory_min_threshold_kb * 1024
    services: dict[str, ModelService] = {}
    for entry, source in zip(config.models, sources, strict=True):
        runtime = ModelRuntime(entry, source, device, keep)
        memory.add(entry.name, runtime)
        services[entry.name] = ModelService(entry, runtime, memory, metrics)
        metrics.update_memory(memory, entry.name)
    state = ServerState(config, services, memory, metrics, key, device)
    max_payload = max(e.payload_limit_bytes for e in config.models)
    server = tornado.httpserver.HTTPServer(
        make_app(state), max_body_size=max_payload * BODY_HARD_CAP_FACTOR, xheaders=False
    )
    where = uds if uds else f"{host}:{port}"
    try:
        if uds:
            server.add_socket(tornado.netutil.bind_unix_socket(uds, mode=0o600))
        else:
            server.listen(port or 0, host)
    except OSError as exc:
        return _fail(f"cannot listen on {where}: {exc.strerror or exc}", 1)
    log.info("listening on %s (device %s)", where, device)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    for name, service in services.items():
        try:
            await memory.ensure_on_device(name)
        except LaunchError as exc:
            return _fail(str(exc), 1)
        except Exception as exc:  # any load failure ends the launch, with its reason
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return _fail(f"model {name}: failed to load: {first}", 1)
        if service.runtime.rerank:
            log.info("model %s ready: %s, cross-encoder (rerank)", name, service.entry.model)
            continue
        log.info(
            "model %s ready: %s, pooling %s, %d dimensions",
            name,
            service.entry.model,
            service.runtime.pooling,
            service.runtime.dimensions,
        )
    for service in services.values():
        service.start()
    state.ready = True
    log.info("serving %d model(s): %s", len(services), ", ".join(services))
    await stop.wait()
    log.info("stopping")
    server.stop()
    for service in services.values():
        await service.stop()
    memory.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the server; the exit status says whether the launch worked."""
    args = parse_args(argv)
    try:
        config = _read_config(args.config)
        key = _read_key(args.api_key_file)
        _setup_logging(config)
        # Checked before torch is imported, so a bad config fails in a moment.
        sources = [inspect_entry(entry) for entry in config.models]
    except LaunchError as exc:
        return _fail(str(exc), 2)

    if not config.debug:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Idle OpenMP workers sleep instead of spinning. On a quiet CPU this costs a few ms per
    # request; on a shared one (other kernels, engines) spinning workers starve the HTTP loop and
    # the tokenizers, and throughput collapsed in our runs. Read when torch loads its OpenMP
    # runtime, hence set before the import; OMP_WAIT_POLICY in the config's env wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    import transformers

    if not config.debug:
        transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    device = pick_device()
    return asyncio.run(serve(config, sources, key, args.host, args.port, device, args.uds))


if __name__ == "__main__":
    sys.exit(main())
