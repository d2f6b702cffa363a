"""A deployment as jupyter-ai 2.x models: its OpenAI-compatible providers' settings in `config.json`.

jupyter-ai 2.x (`jupyter_ai.config_manager`) keeps one selected chat model (`model_provider_id`) and
one embedding model (`embeddings_provider_id`) in `<jupyter data dir>/jupyter_ai/config.json`, each a
global id `<provider>:<model>`; the provider settings of each global id in `fields` (chat) and
`embeddings_fields`; and keys in `api_keys` by environment variable name. Its OpenAI-compatible
providers are `openai-chat-custom` (chat) and `openai-custom` (embeddings), both with an
`openai_api_base` field, both reading `api_keys.OPENAI_API_KEY`: one key for every OpenAI provider,
and no per-provider key field (a key in `fields` would be overridden by it).

So a registration writes, for each chat model, `fields["openai-chat-custom:<model>"] =
{"openai_api_base": <deployment's .../v1>}` (embedding models likewise in `embeddings_fields`),
puts the key made for jupyter-ai in `api_keys.OPENAI_API_KEY`, and selects the first model only
where nothing is selected. It refuses (Conflict) rather than overwrite what is not its own: an
`OPENAI_API_KEY` that is the user's (or another deployment's), settings of the same global id, or a
selected model of another provider that reads `OPENAI_API_KEY` (it would be sent this deployment's key).

jupyter-ai rewrites the file with its own model (unknown keys dropped), so what was written for each
deployment is kept next to it in `.modeldeploy-v2.json` (no secrets): removal takes away exactly
that, where it is still as written, and the key only when it is this deployment's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .jupyter_ai import DESCRIPTION_MARK, write_atomic

CHAT_PROVIDER = "openai-chat-custom"
EMBEDDINGS_PROVIDER = "openai-custom"
KEY_NAME = "OPENAI_API_KEY"
LEDGER = ".modeldeploy-v2.json"
# GlobalConfig's required fields, for a file created here (jupyter-ai fills in the rest when it starts).
DEFAULTS: dict[str, Any] = {"model_provider_id": None, "embeddings_provider_id": None,
                            "completions_model_provider_id": None, "send_with_shift_enter": False, "fields": {},
                            "api_keys": {}, "completions_fields": {}, "embeddings_fields": {}}
# Which file section holds a selection's settings.
SECTIONS = {"model_provider_id": "fields", "embeddings_provider_id": "embeddings_fields"}
SELECTIONS = (*SECTIONS, "completions_model_provider_id")
# jupyter-ai 2.x's providers (chat, completion, embeddings) that send api_keys.OPENAI_API_KEY.
KEY_READERS = {"openai", "openai-chat", CHAT_PROVIDER, EMBEDDINGS_PROVIDER}

# whose_key(secret): the deployment id of a live key made for jupyter-ai, "" for one of those no longer
# valid (replaceable), None for any other key (the user's own).
KeyOwner = Callable[[str], "str | None"]


class Conflict(ValueError):
    """The registration would overwrite settings that are not this deployment's (HTTP 409)."""


def chat_id(model: str) -> str:
    return f"{CHAT_PROVIDER}:{model}"


def embeddings_id(model: str) -> str:
    return f"{EMBEDDINGS_PROVIDER}:{model}"


def _load(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ValueError(f"{what} {path.name} is not valid JSON ({exc}); left unchanged") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path.name} is not a JSON object; left unchanged")
    return data


def _read(path: Path) -> dict[str, Any]:
    data = _load(path, "jupyter-ai's configuration")
    for key in ("fields", "embeddings_fields", "api_keys"):
        if not isinstance(data.get(key, {}), dict):
            raise ValueError(f"jupyter-ai's configuration {path.name}: {key} is not an object; left unchanged")
    return data


def _ledger(path: Path) -> dict[str, Any]:
    return _load(path.parent / LEDGER, "the registration ledger")


def register(path: Path, *, deployment_id: str, chat: list[str], embeddings: list[str], api_base: str, key: str,
             whose_key: KeyOwner) -> dict[str, Any]:
    """Write the deployment's models (its earlier registration must be removed first); returns what was
    written, the key left out: `{"fields": [...], "embeddings_fields": [...], "selected": [...]}`."""
    data = _read(path)
    ledger = _ledger(path)
    written = {"fields": [chat_id(m) for m in chat], "embeddings_fields": [embeddings_id(m) for m in embeddings]}
    theirs = data.get("api_keys", {}).get(KEY_NAME)
    if theirs:
        owner = whose_key(theirs) if isinstance(theirs, str) else None
        if owner is None:
            raise Conflict(f"jupyter-ai's api_keys.{KEY_NAME} is already set (a key of your own; jupyter-ai 2.x "
                           "has one key for all its OpenAI providers): remove it in jupyter-ai's settings first, "
                           "or use jupyter-ai 3.x")
        if owner:
            raise Conflict(f"jupyter-ai's api_keys.{KEY_NAME} holds the key registered for deployment {owner} "
                           "(jupyter-ai 2.x has one key for all its OpenAI providers): unregister that one first")
    for selection in SELECTIONS:  # a model chosen elsewhere would send this deployment's key to its server
        chosen = data.get(selection)
        if isinstance(chosen, str) and chosen.split(":", 1)[0] in KEY_READERS:
            raise Conflict(f"jupyter-ai's {selection} is {chosen[:200]!r}, which would be sent the key in "
                           f"api_keys.{KEY_NAME}: choose another model in jupyter-ai first")
    for section, ids in written.items():
        for gid in ids:
            if gid in data.get(section, {}):
                raise Conflict(f"jupyter-ai's {section}[{gid!r}] is already set (not by this deployment): "
                               "remove that model's settings in jupyter-ai first")
    selected = []
    for selection, section in SECTIONS.items():
        if written[section] and not data.get(selection):
            data[selection] = written[section][0]
            selected.append(written[section][0])
    for section, ids in written.items():
        data[section] = {**data.get(section, {}), **{gid: {"openai_api_base": api_base} for gid in ids}}
    data["api_keys"] = {**data.get("api_keys", {}), KEY_NAME: key}
    ledger[deployment_id] = {"api_base": api_base, **written}
    write_atomic(path.parent / LEDGER, ledger)  # first: what is in the file is always in the ledger
    write_atomic(path, {**DEFAULTS, **data})
    return {**written, "selected": selected}


def unregister(path: Path, deployment_id: str, whose_key: KeyOwner) -> int:
    """Remove what was written for the deployment, where it is still as written; returns how many models."""
    ledger = _ledger(path)
    data = _read(path) if path.exists() else {}
    entry = ledger.get(deployment_id) if isinstance(ledger.get(deployment_id), dict) else {}
    removed, changed = 0, False
    ours: set[str] = set()
    for section in SECTIONS.values():
        settings = dict(data.get(section, {}))
        mine = [gid for gid in entry.get(section, []) if isinstance(settings.get(gid), dict)
                and settings[gid].get("openai_api_base") == entry.get("api_base")]
        for gid in mine:
            del settings[gid]
        if mine:
            data[section] = settings
            ours.update(mine)
            removed += len(mine)
    for selection in SELECTIONS:
        if data.get(selection) in ours:  # the model goes away: nothing selected rather than a dead one
            data[selection] = None
            changed = True
    keys = dict(data.get("api_keys", {}))
    if isinstance(keys.get(KEY_NAME), str) and whose_key(keys[KEY_NAME]) == deployment_id:
        del keys[KEY_NAME]
        data["api_keys"] = keys
        changed = True
    if removed or changed:
        write_atomic(path, data)
    if deployment_id in ledger:
        del ledger[deployment_id]
        write_atomic(path.parent / LEDGER, ledger)
    return removed


def entries(deployment_id: str, deployment: str, written: dict[str, Any], api_base: str) -> list[dict[str, Any]]:
    """The registration's models as the REST answer shows them (no key)."""
    ids = written["fields"] + written["embeddings_fields"]
    return [{"id": gid, "name": f"{deployment} · {gid.split(':', 1)[1]}" if len(ids) > 1 else deployment,
             "description": DESCRIPTION_MARK + deployment_id, "model_id": gid, "params": {"openai_api_base": api_base}}
            for gid in ids]


def registered(path: Path, deployment_id: str, deployment: str) -> list[dict[str, Any]]:
    """The deployment's models that a 2.x registration wrote and are still there (no key)."""
    written = _ledger(path).get(deployment_id)
    if not isinstance(written, dict):
        return []
    data = _read(path)
    present = {}
    for section in ("fields", "embeddings_fields"):
        there = data.get(section) if isinstance(data.get(section), dict) else {}
        ours = written.get(section) if isinstance(written.get(section), list) else []
        present[section] = [g for g in ours if isinstance(g, str) and g in there]
    return entries(deployment_id, deployment, present, str(written.get("api_base", "")))
