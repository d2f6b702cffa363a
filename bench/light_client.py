"""Light HTTP clients for the gateway's trivial-route figures: they cost less per request than the gateway.

httpx spends more CPU per request than the gateway does, which hides the gateway's own cost
(both paths look alike). Here latency comes from `http.client` on one keep-alive connection and
throughput from raw asyncio connections that write a request and read its answer by its framing
(Content-Length or chunked), nothing more. A target is a TCP `(host, port)` or a Unix socket path.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import statistics
import time
from dataclasses import dataclass

Target = tuple[str, int] | str


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (an engine's own socket)."""

    def __init__(self, path: str, timeout: float = 30.0):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def connection(target: Target) -> http.client.HTTPConnection:
    if isinstance(target, str):
        return UnixHTTPConnection(target)
    return http.client.HTTPConnection(*target, timeout=30)


@dataclass
class Latency:
    """Per-request latency of one keep-alive client."""

    p50_ms: float
    p99_ms: float


def keep_alive_latency(target: Target, path: str, headers: dict[str, str], requests: int) -> Latency:
    """GET `path` `requests` times on one kept connection (after 20 to warm up)."""
    conn = connection(target)
    times = []
    try:
        for i in range(requests + 20):
            started = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status}")
            if i >= 20:
                times.append(time.perf_counter() - started)
    finally:
        conn.close()
    times.sort()
    return Latency(statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000)


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool, int]:
    """The status of the next answer, read to its end, whether the server keeps the connection, and how many SSE
    events its body held (a blank line ends each; chunk framing has none)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    chunked = False
    kept = True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value)
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif lowered == b"connection" and b"close" in value.lower():
            kept = False
    events = 0
    if chunked:
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            events += (await reader.readexactly(size + 2)).count(b"\n\n")
        await reader.readuntil(b"\r\n")  # the last chunk's end (no trailers here)
    elif length:
        events = (await reader.readexactly(length)).count(b"\n\n")
    return status, kept, events


async def _open(target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if isinstance(target, str):
        return await asyncio.open_unix_connection(target)
    return await asyncio.open_connection(*target)


async def _client(target: Target, request: bytes, until: float, counts: list[int]) -> None:
    """One connection's loop: `counts` is [answers, SSE events, connections the server had closed]. A server that
    ends a kept connection (llama-server does, every so many requests) gets a new one, as any HTTP client would
    open."""
    reader, writer = await _open(target)
    try:
        while time.perf_counter() < until:
            writer.write(request)
            try:
                status, kept, events = await _read_answer(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                kept, status, events = False, 0, 0  # closed before this request was read: sent again
                counts[2] += 1
            if status not in (0, 200):
                raise RuntimeError(f"a request failed under load: {status}")
            counts[0] += status == 200
            counts[1] += events
            if not kept:
                writer.close()
                reader, writer = await _open(target)
    finally:
        writer.close()


def new_connection_latency(target: Target, path: str, headers: dict[str, str], requests: int) -> Latency:
    """GET `path` `requests` times, each on a connection of its own (a connection's first request)."""
    times = []
    for i in range(requests + 10):
        conn = connection(target)
        try:
            started = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
        if i >= 10:
            times.append(elapsed)
    times.sort()
    return Latency(statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000)


def _request(target: Target, path: str, headers: dict[str, str], body: bytes | None) -> bytes:
    host = "localhost" if isinstance(target, str) else f"{target[0]}:{target[1]}"
    method = "GET" if body is None else "POST"
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def load_async(target: Target, path: str, headers: dict[str, str], clients: int = 16, seconds: float = 5.0,
                     body: bytes | None = None, warm_s: float = 0.5) -> tuple[float, float, int]:
    """`clients` raw keep-alive connections sending GET `path` (or POST `body`) for `seconds`, after `warm_s` of
    warm-up: (answers a second, SSE events a second, kept connections the server had closed)."""
    request = _request(target, path, headers, body)
    if warm_s:
        await asyncio.gather(*(_client(target, request, time.perf_counter() + warm_s, [0, 0, 0])
                               for _ in range(clients)))
    counts = [0, 0, 0]
    started = time.perf_counter()
    await asyncio.gather(*(_client(target, request, started + seconds, counts) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return counts[0] / elapsed, counts[1] / elapsed, counts[2]


async def throughput_async(target: Target, path: str, headers: dict[str, str], clients: int = 16,
                           seconds: float = 5.0, body: bytes | None = None) -> float:
    """`throughput` on the running loop (after half a second of warm-up); a `body` is POSTed."""
    return (await load_async(target, path, headers, clients, seconds, body))[0]


def throughput(target: Target, path: str, headers: dict[str, str], clients: int = 16, seconds: float = 5.0,
               body: bytes | None = None) -> float:
    """Requests per second of `clients` raw keep-alive connections sending GET `path` (or POST `body`) for `seconds`."""
    return asyncio.run(throughput_async(target, path, headers, clients, seconds, body))
