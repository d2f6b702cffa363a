"""The supervisor's own requests to engines (health, metrics, control calls), over TCP or a Unix socket."""

from __future__ import annotations

from typing import Any

import httpx

from ..engines.base import EngineAddress, EngineCall


class EngineHttp:
    """One httpx client per engine address; every request carries the engine's private key."""

    def __init__(self, timeout: float = 5.0):
        self.timeout = timeout
        self._clients: dict[EngineAddress, httpx.AsyncClient] = {}

    def _client(self, address: EngineAddress) -> httpx.AsyncClient:
        client = self._clients.get(address)
        if client is None or client.is_closed:
            transport = httpx.AsyncHTTPTransport(uds=address.socket_path) if address.socket_path else None
            client = httpx.AsyncClient(transport=transport, timeout=self.timeout)
            self._clients[address] = client
        return client

    async def request(
        self, address: EngineAddress, key: str | None, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        """A request to the engine at `address` (`path` relative to it); raises httpx.HTTPError."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return await self._client(address).request(method, address.base_url + path, headers=headers, **kwargs)

    async def calls(self, address: EngineAddress, key: str | None, calls: list[EngineCall], timeout: float) -> None:
        """Make control requests (sleep, wake, adapters) in order; RuntimeError on the first the engine refuses."""
        for call in calls:
            response = await self.request(address, key, call.method, call.path, params=call.params or None,
                                          json=call.json, timeout=timeout)
            if response.status_code >= 400:
                raise RuntimeError(f"{call.method} {call.path}: HTTP {response.status_code} {response.text[:200]}")

    async def forget(self, address: EngineAddress) -> None:
        """Close the client of an engine that stopped."""
        client = self._clients.pop(address, None)
        if client is not None:
            await client.aclose()

    async def close(self) -> None:
        """Close every client."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
