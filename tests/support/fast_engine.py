"""A fast fake llama-server: serves tiny SSE chunks as fast as it can, for gateway load measurements.

    python tests/support/fast_engine.py --host <socket>.sock --api-key-file F [--port N] [other flags ignored]

It takes llama-server's command line (so the real supervisor launches it through the
`llamacpp_server` setting) and answers `/health`, `/v1/models` and streaming
`/v1/chat/completions` with `max_tokens` one-token events, like a busy GPU engine emits them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

from aiohttp import web


def make_app(key: str) -> web.Application:
    async def guard(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.path != "/health" and request.headers.get("Authorization") != f"Bearer {key}":
            return web.json_response({"error": "bad key"}, status=401)
        return await handler(request)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fast", "object": "model"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        tokens = int(body.get("max_tokens", 16))
        if not body.get("stream"):
            return web.json_response({"object": "chat.completion", "choices": [{"message": {"content": "x" * tokens}}],
                                      "usage": {"prompt_tokens": 1, "completion_tokens": tokens}})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        event = b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
        for _ in range(tokens):
            await response.write(event)
        final = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                 "timings": {"prompt_n": 1, "cache_n": 0, "predicted_n": tokens}}
        await response.write(b"data: " + json.dumps(final).encode() + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application(middlewares=[web.middleware(guard)])
    app.add_routes([web.get("/health", health), web.get("/v1/models", models), web.post("/v1/chat/completions", chat)])
    return app


async def serve(args: argparse.Namespace) -> None:
    key = Path(args.api_key_file).read_text().strip()
    runner = web.AppRunner(make_app(key), access_log=None)
    await runner.setup()
    if args.host.endswith(".sock"):
        site: web.BaseSite = web.UnixSite(runner, args.host)
    else:
        site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    if args.host.endswith(".sock"):
        os.chmod(args.host, 0o600)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--api-key-file", required=True)
    args, _ignored = parser.parse_known_args()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
