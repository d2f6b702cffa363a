"""A blocking HTTP/1.1 client on a raw socket: sends exactly the bytes a test writes, reads answers one by one.

Unlike a library client it never normalises a path, never adds a header and shows interim
1xx answers, cut bodies and pipelined answers as they are on the wire.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    """One answer as read from the wire."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool  # False when the connection ended before the body did

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """One client connection to a server on loopback."""

    def __init__(self, port: int | str, timeout: float = 15.0):
        """`port`: a loopback TCP port, or the path of a Unix socket."""
        if isinstance(port, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(port)
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buffer = b""
        self.closed = False

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"",
                *, send_body: bool = True) -> None:
        """Write a request (Content-Length set for a body unless the headers say chunked)."""
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
        all_headers = dict(headers or {})
        if body and "Transfer-Encoding" not in all_headers and "Content-Length" not in all_headers:
            all_headers["Content-Length"] = str(len(body))
        lines += [f"{k}: {v}" for k, v in all_headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        self.send(head + (body if send_body else b""))

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            data = b""
        if not data:
            self.closed = True
            return False
        self._buffer += data
        return True

    def _read_until(self, marker: bytes) -> bytes | None:
        while marker not in self._buffer:
            if not self._fill():
                return None
        index = self._buffer.index(marker) + len(marker)
        out, self._buffer = self._buffer[:index], self._buffer[index:]
        return out

    def read_until(self, marker: bytes) -> bytes | None:
        """The raw bytes up to and including `marker` (as a client that stops at a stream's sentinel reads)."""
        return self._read_until(marker)

    def _read_exactly(self, n: int) -> tuple[bytes, bool]:
        while len(self._buffer) < n:
            if not self._fill():
                out, self._buffer = self._buffer, b""
                return out, False
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out, True

    def read_response(self, method: str = "POST") -> RawResponse | None:
        """The next answer (an interim 1xx is returned as it is); None if the connection closed first."""
        head = self._read_until(b"\r\n\r\n")
        if head is None:
            return None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        response = RawResponse(status, headers, b"", True)
        if 100 <= status < 200 or status in (204, 304) or method == "HEAD":
            return response
        length = response.header("Content-Length")
        if (response.header("Transfer-Encoding") or "").lower() == "chunked":
            body = b""
            while True:
                size_line = self._read_until(b"\r\n")
                if size_line is None:
                    response.complete = False
                    break
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    self._skip_trailers()
                    break
                data, ok = self._read_exactly(size + 2)
                body += data[:size]
                if not ok:
                    response.complete = False
                    break
            response.body = body
        elif length is not None:
            response.body, response.complete = self._read_exactly(int(length))
        else:
            while self._fill():
                continue  # read to the end of the connection
            response.body, self._buffer = self._buffer, b""
        return response

    def _skip_trailers(self) -> None:
        """Read the trailer fields after the last chunk, up to the empty line."""
        line = self._read_until(b"\r\n")
        while line not in (b"\r\n", None):
            line = self._read_until(b"\r\n")

    def final_response(self, method: str = "POST") -> RawResponse | None:
        """The next non-interim answer."""
        while True:
            response = self.read_response(method)
            if response is None or not 100 <= response.status < 200:
                return response
