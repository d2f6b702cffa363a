"""The sweep that keeps shared keys honest: each running server hears who of its key holders is still in
the Hub, and in which groups; the server revokes the keys of whoever lost their place."""

from __future__ import annotations

import asyncio
import logging

from .hub_api import HubApi, OwnerUnavailable, Refused

log = logging.getLogger(__name__)


async def sweep(hub: HubApi) -> dict[str, list[str]]:
    """One pass over the running servers; returns the key ids each owner's server revoked."""
    groups: dict[str, list[str] | None] = {}
    revoked: dict[str, list[str]] = {}
    for owner, path in (await hub.running_servers()).items():
        try:
            holders = (await hub.owner_call(path, "GET", "holders"))["holders"]
            if not holders:
                continue
            for name in holders:
                if name not in groups:
                    person = await hub.person(name)
                    groups[name] = person.groups if person is not None else None
            answer = await hub.owner_call(path, "POST", "members", {"members": {n: groups[n] for n in holders}})
        except (OwnerUnavailable, Refused) as exc:
            log.debug("share check skipped %s: %s", owner, exc)
            continue
        if answer["revoked"]:
            revoked[owner] = [key["id"] for key in answer["revoked"]]
            log.info("%s's server revoked %d shared key(s) of people no longer shared with",
                     owner, len(answer["revoked"]))
    return revoked


async def sweep_forever(hub: HubApi, every_s: float) -> None:
    """Sweep every `every_s` seconds until cancelled; a failed pass is logged and the next one tried."""
    while True:
        try:
            await sweep(hub)
        except Exception:  # the Hub restarting must not end the checks
            log.exception("share check failed; trying again in %.0f s", every_s)
        await asyncio.sleep(every_s)
