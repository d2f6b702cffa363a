"""A small real HTTP/1.1 engine on a raw socket that misbehaves on command, for wire-level gateway tests.

It records every request it receives (method, raw target, headers, body), so a test can say
what reached the engine. The answer's shape is chosen per request by the `X-Fake-Mode` header:

- (none)            JSON echoing the request's `nonce`, keep-alive, Content-Length
- `interim`         a `100 Continue` and a `103 Early Hints` before the real answer
- `close-mid-body`  announces 1000 bytes, sends 10, closes
- `trailers`        a chunked body followed by trailer fields
- `sse`             a chunked SSE stream of `X-Fake-Events` events, the last with usage; with
                    `X-Fake-Done: <s>` then `data: [DONE]`, and the last chunk that many seconds later
- `slow`            waits `X-Fake-Delay` seconds before answering
- `big`             the JSON answer padded to `X-Fake-Size` bytes, sent in pieces (it arrives in several reads)
- `no-content`      204; `not-modified` 304 with a Content-Length and no body
- `close-after`     answers with keep-alive, then closes the idle connection a moment later
- `drop-next`       answers with keep-alive, then closes the connection on its next request unanswered
                    (the keep-alive race: the server closed it as the gateway sent)
- `garbage`         a status line that is not HTTP
- `bad-request`     400 with an OpenAI-style error document
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Received:
    """One request as the engine saw it on the wire."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WireEngine:
    """The engine: listens on a Unix socket (as local engines do) and answers by mode."""

    socket_path: Path
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    dropped: list[Received] = field(default_factory=list)  # read, then closed unanswered (drop-next)
    in_flight: int = 0  # requests read and not yet answered, now
    peak_in_flight: int = 0  # the most requests it ever had in flight at once
    _server: asyncio.base_events.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> WireEngine:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path))
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def paths(self) -> list[str]:
        return [r.target for r in self.received]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        drop_next = False
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                if drop_next:
                    self.dropped.append(request)
                    return
                drop_next = request.headers.get("x-fake-mode") == "drop-next"
                self.received.append(request)
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    keep = await self._answer(request, writer)
                finally:
                    self.in_flight -= 1
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> Received | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = b""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                body += (await reader.readexactly(size + 2))[:-2]
        return Received(method, target, headers, body)

    async def _answer(self, request: Received, writer: asyncio.StreamWriter) -> bool:
        mode = request.headers.get("x-fake-mode", "")
        try:
            nonce = json.loads(request.body or b"{}").get("nonce")
        except (ValueError, AttributeError):
            nonce = None
        payload = json.dumps({
            "nonce": nonce, "target": request.target, "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer to {nonce}"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
        }).encode()

        def send(status: str, headers: list[tuple[str, str]], body: bytes = b"") -> None:
            head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
            writer.write(head.encode("latin-1") + body)

        json_headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        if mode == "slow":
            await asyncio.sleep(float(request.headers.get("x-fake-delay", "1")))
        if mode == "interim":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            send("200 OK", json_headers, payload)
        elif mode == "close-mid-body":
            send("200 OK", [("Content-Type", "application/json"), ("Content-Length", "1000")], payload[:10])
            await writer.drain()
            return False
        elif mode == "trailers":
            send("200 OK", [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked"),
                            ("Trailer", "X-Checksum")])
            writer.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\nX-Checksum: abc\r\n\r\n")
        elif mode == "sse":
            count = int(request.headers.get("x-fake-events", "5"))
            send("200 OK", [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked")])
            for i in range(count):
                event = {"nonce": nonce, "choices": [{"index": 0, "delta": {"content": f"t{i} "}}]}
                if i == count - 1:
                    event["usage"] = {"prompt_tokens": 2, "completion_tokens": count}
                data = f"data: {json.dumps(event)}\n\n".encode()
                writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                await writer.drain()
                await asyncio.sleep(float(request.headers.get("x-fake-gap", "0.01")))
            if "x-fake-done" in request.headers:
                done = b"data: [DONE]\n\n"
                writer.write(f"{len(done):x}\r\n".encode() + done + b"\r\n")
                await writer.drain()
                await asyncio.sleep(float(request.headers["x-fake-done"]))
            writer.write(b"0\r\n\r\n")
        elif mode == "big":
            size = int(request.headers.get("x-fake-size", "1000000"))
            padded = payload[:-1] + b', "pad": "' + b"x" * max(0, size - len(payload) - 11) + b'"}'
            send("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(padded)))])
            for at in range(0, len(padded), 65536):
                writer.write(padded[at:at + 65536])
                await writer.drain()
                await asyncio.sleep(0.002)
        elif mode == "no-content":
            send("204 No Content", [])
        elif mode == "not-modified":
            send("304 Not Modified", [("Content-Length", "1234"), ("ETag", '"e1"')])
        elif mode == "bad-request":
            error = json.dumps({"error": {"message": "the engine refuses this", "type": "invalid_request_error"}}).encode()
            send("400 Bad Request", [("Content-Type", "application/json"), ("Content-Length", str(len(error)))], error)
        elif mode == "garbage":
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()
            return False
        elif request.method == "HEAD":
            send("200 OK", json_headers)
        else:
            send("200 OK", json_headers, payload)
        await writer.drain()
        if mode == "close-after":
            await asyncio.sleep(0.05)
            return False
        return True
