"""Per-key usage without a server: counts per minute, batched writes that add up, damage survived."""

from __future__ import annotations

from pathlib import Path

from jupyter_modeldeploy.gateway.records import RequestRecord
from jupyter_modeldeploy.gateway.usage import Usage
from jupyter_modeldeploy.metrics.activity_store import ActivityStore
from jupyter_modeldeploy.metrics.keyusage import KeyUsage


def test_batches_add_up_and_totals_come_back(tmp_path: Path) -> None:
    path = tmp_path / "activity.sqlite"
    usage = KeyUsage(ActivityStore(path))
    for status, tokens in ((200, Usage(3, 4)), (200, Usage(1, 2)), (429, None)):
        usage.observe(RequestRecord("d1", "m", status, 0.01, usage=tokens, key_id="t-1"))
        write = usage.pending_write()
        assert write is not None
        write()  # three batches on the same minute row
    assert usage.pending_write() is None
    rows = usage.store.usage(key_id="t-1")
    assert [(r["requests"], r["errors"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [(3, 1, 4, 6)]
    usage.store.close()
    again = KeyUsage(ActivityStore(path))
    assert again.totals == {("t-1", "d1", "m"): [3, 1, 4, 6]}
    assert again.tokens_today() == {"t-1": 10}
    again.store.prune_usage(rows[0]["minute"] + 60)
    assert again.store.usage() == []
    again.store.close()


def test_an_unreadable_activity_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "activity.sqlite"
    path.write_bytes(b"not a database at all" * 100)
    store = ActivityStore(path)
    assert store.usage() == []
    assert len(list(tmp_path.glob("activity.sqlite.unreadable-*"))) == 1
    store.close()


def test_captured_bodies_lose_their_secrets() -> None:
    from jupyter_modeldeploy.metrics.redact import redact

    body = (b'{"messages": [{"content": "use md-' + b"A" * 43 + b' or sk-known-secret"}], "api_key": "x\\"y",'
            b' "max_tokens": 5, "note": "Bearer abcdefghijkl", "prompt_tokens": 3}')
    out = redact(body, ["sk-known-secret"])
    assert b"md-AAAA" not in out and b"sk-known-secret" not in out and b'x\\"y' not in out and b"abcdefghijkl" not in out
    assert b'"max_tokens": 5' in out and b'"prompt_tokens": 3' in out and out.count(b"********") == 4
