"""`POST /api/modeldeploy/validate`: the configuration's fields, then what would stop it from starting.

Beyond the config model's own checks, the forms need to know before launching whether the
model can be found here: a local path that does not exist, a file that is not GGUF for
llama.cpp (its first four bytes are `GGUF`), a Hugging Face reference that is not in the
cache while the server is offline. `preflight(config)` is a plain function over the parsed
configuration; the handler turns its findings into the same 422 answer field errors get.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

from tornado import web

from ..config import ConfigError, export_config, parse_config
from ..engines.hf import HF_FILE_RE
from .fitcheck import fit_for
from .handlers import BaseHandler

GGUF_MAGIC = b"GGUF"
#: A Hugging Face repo id: `owner/name`.
HF_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_offline() -> bool:
    """Whether the Hugging Face hub is off for this server (`HF_HUB_OFFLINE`)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE) or flag


def _looks_local(reference: str) -> bool:
    return reference.startswith(("/", ".", "~")) or Path(reference).expanduser().exists()


def _gguf_problem(path: Path, shown: str) -> str | None:
    if path.is_dir():
        return f"{shown} is a folder; llama.cpp needs a GGUF model file"
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        return f"{shown} cannot be read on the server ({exc.strerror or exc})"
    if head != GGUF_MAGIC:
        return f"{shown} is not a GGUF file (llama.cpp needs one; GGUF files start with the bytes 'GGUF')"
    return None


def check_gguf_reference(reference: str, *, offline: bool) -> str | None:
    """Why llama.cpp could not load `reference` (a local GGUF file or `owner/repo/file.gguf`), or None."""
    if _looks_local(reference):
        path = Path(reference).expanduser()
        if not path.exists():
            return f"no file {reference} on the server"
        return _gguf_problem(path, reference)
    match = HF_FILE_RE.match(reference)
    if not match:
        return f"no file {reference} on the server, and it is not a Hugging Face file (owner/repo/file.gguf)"
    if offline:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(match.group("repo"), match.group("file"))
        if not isinstance(cached, str):
            return (f"{reference} is not in the local Hugging Face cache, and the server is offline "
                    "(HF_HUB_OFFLINE is set)")
        return _gguf_problem(Path(cached), reference)
    return None


def check_model_folder(reference: str, *, offline: bool) -> str | None:
    """Why an engine could not find `reference` (a local model folder or a repo id), or None."""
    if _looks_local(reference):
        path = Path(reference).expanduser()
        if not path.exists():
            return f"no folder {reference} on the server"
        if not path.is_dir():
            return f"{reference} is a file; this engine needs a model folder or a Hugging Face repo id"
        return None
    if not HF_REPO_RE.match(reference):
        return f"no folder {reference} on the server, and it is not a Hugging Face repo id (owner/name)"
    if offline:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(reference, "config.json"), str):
            return (f"unknown Hugging Face repo {reference}: it is not in the local cache, and the server is "
                    "offline (HF_HUB_OFFLINE is set)")
    return None


def preflight(config: Any, *, offline: bool | None = None) -> list[dict[str, str]]:
    """Field errors (`{field, message}`) for models the engine could not find or load here."""
    offline = hub_offline() if offline is None else offline
    errors: list[dict[str, str]] = []

    def add(field: str, problem: str | None) -> None:
        if problem:
            errors.append({"field": field, "message": problem})

    if config.kind == "llamacpp":
        add("model", check_gguf_reference(config.model, offline=offline))
        for i, extra in enumerate(config.additional_models):
            add(f"additional_models.{i}", check_gguf_reference(extra, offline=offline))
    elif config.kind == "llm":
        add("model", check_model_folder(config.model, offline=offline))
    elif config.kind == "embedding":
        for i, entry in enumerate(config.models):
            add(f"models.{i}.model", check_model_folder(entry.model, offline=offline))
    return errors


class ValidateHandler(BaseHandler):
    """POST a configuration: 200 with the normalised config and notices, or 422 naming each wrong field,
    including models that cannot be found or loaded on this server."""

    @web.authenticated
    async def post(self) -> None:
        async def action() -> None:
            config = parse_config(self.json_body())
            # File reads and cache lookups: off the event loop.
            loop = asyncio.get_running_loop()
            errors = await loop.run_in_executor(None, preflight, config)
            if errors:
                raise ConfigError(errors)
            notices = config.notices() if hasattr(config, "notices") else []
            fit = await loop.run_in_executor(None, fit_for, self.supervisor, config)
            self.write_json({"ok": True, "config": export_config(config), "notices": notices, "fit": fit.to_json()})

        await self.run(action)


def validate_handlers(prefix: str) -> list[tuple[str, Any]]:
    """The validate route (ahead of the deployments API's, which only checks the fields)."""
    return [(rf"{prefix}/validate", ValidateHandler)]
