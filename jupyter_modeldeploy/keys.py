"""API keys and tokens: generated at random, stored only as hashes, compared in constant time."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

TOKEN_PREFIX = "md-"


def new_token() -> str:
    """A fresh random token (shown to the user once)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@functools.lru_cache(maxsize=1024)  # admission hashes the presented key for the fixed key and the token index alike
def hash_key(key: str) -> str:
    """The hash stored in place of a key. Keys are long random strings, so a plain SHA-256 suffices."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_matches(key: str, stored_hash: str | None) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    if not stored_hash:
        return False
    return hmac.compare_digest(hash_key(key), stored_hash)
