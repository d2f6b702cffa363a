"""A fake engine: a small real HTTP server that behaves like an engine and misbehaves on command.

    python tests/support/fake_engine.py --host <socket>.sock --api-key-file F [--health-delay S]
        [--crash-while-loading CODE] [--sleep-mode] [--token-s S] [--parallel N]
        [llama-server's other flags, ignored]

It takes llama-server's command line, so the real supervisor can run it (through the engine
registry, or the `llamacpp_server` setting). It serves `/health` (503 until the health delay
has passed), `/v1/models`, `/v1/chat/completions` (JSON, or SSE with one event per token as
fast as it can and `timings` at the end, like llama-server), `/metrics`, vLLM-style `/sleep`,
`/wake_up`, `/is_sleeping` with `--sleep-mode`, and commands for tests: `POST /fake/crash?code=N`
(exits), `POST /fake/hang` (stops answering anything).

Paced like a GPU-bound engine with `--token-s S`: each completion holds one of `--parallel N`
slots (llama-server's own flag; requests beyond them wait for a slot) and sleeps S seconds per
output token, streamed or not, so N requests run at once at a fixed rate and the engine uses
almost no CPU. `FAKE_ENGINE_SLOWDOWN=F` in its environment multiplies S (a slower node).

`FakeEngine` is the engine class that plans it, for `Supervisor(engines={...})`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web


def make_app(key: str, args: argparse.Namespace) -> web.Application:
    started = time.monotonic()
    state = {"sleeping": False, "hung": False, "tokens": 0}
    token_s = args.token_s * float(os.environ.get("FAKE_ENGINE_SLOWDOWN", "1") or 1)
    slots = asyncio.Semaphore(max(1, args.parallel)) if token_s else None

    @web.middleware
    async def guard(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if state["hung"]:
            await asyncio.Event().wait()  # never answers again
        if request.path != "/health" and request.headers.get("Authorization") != f"Bearer {key}":
            return web.json_response({"error": "bad key"}, status=401)
        return await handler(request)

    async def health(request: web.Request) -> web.Response:
        if time.monotonic() - started < args.health_delay:
            return web.json_response({"status": "loading"}, status=503)
        return web.json_response({"status": "ok"})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": args.alias, "object": "model"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if slots is None:
            return await answer(request, body)
        async with slots:  # a paced engine: one slot per request, busy for the answer's tokens
            return await answer(request, body)

    async def answer(request: web.Request, body: dict) -> web.StreamResponse:
        tokens = int(body.get("max_tokens", 16))
        state["tokens"] += tokens
        if not body.get("stream"):
            if token_s:
                await asyncio.sleep(token_s * tokens)
            return web.json_response({
                "object": "chat.completion", "model": args.alias,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * tokens}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1},
            })
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        event = b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
        pace = token_s or (1.0 / args.events_per_s if args.events_per_s else 0.0)
        due = time.monotonic()
        for _ in range(tokens):
            await response.write(event)
            if pace:
                due += pace
                if due - time.monotonic() > 0.001:  # sleeps of a millisecond or more keep the rate
                    await asyncio.sleep(due - time.monotonic())
        final = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                 "timings": {"prompt_n": 1, "cache_n": 0, "predicted_n": tokens}}
        await response.write(b"data: " + json.dumps(final).encode() + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    async def metrics(request: web.Request) -> web.Response:
        text = f"# TYPE llamacpp:tokens_predicted_total counter\nllamacpp:tokens_predicted_total {state['tokens']}\n"
        return web.Response(text=text, content_type="text/plain")

    async def sleep(request: web.Request) -> web.Response:
        state["sleeping"] = True
        return web.json_response({})

    async def wake_up(request: web.Request) -> web.Response:
        state["sleeping"] = False
        return web.json_response({})

    async def is_sleeping(request: web.Request) -> web.Response:
        return web.json_response({"is_sleeping": state["sleeping"]})

    async def crash(request: web.Request) -> web.Response:
        code = int(request.query.get("code", "3"))
        asyncio.get_running_loop().call_later(0.05, os._exit, code)
        return web.json_response({"exiting": code})

    async def hang(request: web.Request) -> web.Response:
        state["hung"] = True
        return web.json_response({"hung": True})

    app = web.Application(middlewares=[guard])
    app.add_routes([
        web.get("/health", health), web.get("/v1/models", models), web.post("/v1/chat/completions", chat),
        web.get("/metrics", metrics), web.post("/fake/crash", crash), web.post("/fake/hang", hang),
    ])
    if args.sleep_mode:
        app.add_routes([web.post("/sleep", sleep), web.post("/wake_up", wake_up), web.get("/is_sleeping", is_sleeping)])
    return app


async def serve(args: argparse.Namespace) -> None:
    if args.crash_while_loading is not None:
        print("fake engine: loading, then failing on purpose", flush=True)
        await asyncio.sleep(0.2)
        sys.exit(args.crash_while_loading)
    key = Path(args.api_key_file).read_text().strip()
    runner = web.AppRunner(make_app(key, args), access_log=None)
    await runner.setup()
    on_socket = args.host.endswith(".sock")
    site: web.BaseSite = web.UnixSite(runner, args.host) if on_socket else web.TCPSite(runner, args.host, args.port)
    await site.start()
    if args.host.endswith(".sock"):
        os.chmod(args.host, 0o600)
    print(f"fake engine: listening on {args.host}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--api-key-file", required=True)
    parser.add_argument("--alias", default="fake")
    parser.add_argument("--health-delay", type=float, default=0.0)
    parser.add_argument("--crash-while-loading", type=int, default=None)
    parser.add_argument("--sleep-mode", action="store_true")
    parser.add_argument("--events-per-s", type=float, default=0.0, help="stream events per second (0: as fast as it can)")
    parser.add_argument("--token-s", type=float, default=0.0,
                        help="seconds per output token, streamed or not, within a slot (0: no pacing, no slots)")
    parser.add_argument("--parallel", "-np", type=int, default=1, help="slots of a paced engine (llama-server's flag)")
    args, _ignored = parser.parse_known_args(argv)
    return args


@dataclass
class FakeEngine:
    """An engine kind that plans the fake engine (for `Supervisor(engines={"llamacpp": FakeEngine()})`)."""

    kind: str = "llamacpp"
    health_delay_s: float = 0.0
    crash_while_loading: int | None = None
    sleep_mode: bool = False
    extra_args: list[str] = field(default_factory=list)

    def model_tasks(self, config):  # type: ignore[no-untyped-def]
        """One chat model, served under the deployment's name."""
        return {config.name: "chat"}

    def adapter_calls(self, action, name, path=None):  # type: ignore[no-untyped-def]
        """None: the fake engine loads no adapters at runtime."""
        return None

    def plan(self, config, ctx):  # type: ignore[no-untyped-def]
        from jupyter_modeldeploy.engines import EngineAddress, LaunchPlan, routes
        from jupyter_modeldeploy.engines.base import EngineCall

        argv = [sys.executable, str(Path(__file__).resolve()), "--host", str(ctx.socket_path),
                "--api-key-file", str(ctx.work_dir / "engine.key"), "--alias", config.name,
                "--health-delay", str(self.health_delay_s), *self.extra_args]
        if self.crash_while_loading is not None:
            argv += ["--crash-while-loading", str(self.crash_while_loading)]
        if self.sleep_mode:
            argv.append("--sleep-mode")
        return LaunchPlan(
            argv=argv, models=[config.name], secrets=[ctx.engine_key], files={"engine.key": ctx.engine_key + "\n"},
            routes=routes.LLAMA_SERVER, listen=EngineAddress(socket_path=str(ctx.socket_path)),
            max_concurrent_requests=64,
            sleep_calls=[EngineCall("POST", "/sleep")] if self.sleep_mode else [],
            wake_calls=[EngineCall("POST", "/wake_up")] if self.sleep_mode else [],
        )


if __name__ == "__main__":
    asyncio.run(serve(parse_args()))
