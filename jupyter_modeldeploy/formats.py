"""How the command line, `%deploy` and the widgets read `field=value` and write durations: one way each.

No imports of the package: every view may use it (the Lab panel's `format.ts` writes durations
the same way).
"""

from __future__ import annotations

import json
from typing import Any


class AssignmentError(ValueError):
    """A `field=value` token that is not one; the message names it."""


def parse_value(text: str) -> Any:
    """A value: JSON when it parses (numbers, true, [0,1], {...}), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(tokens: list[str]) -> dict[str, Any]:
    """`a=1 b=x c.d=2` -> `{"a": 1, "b": "x", "c": {"d": 2}}`; AssignmentError on a token without `field=`."""
    result: dict[str, Any] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        key = key.strip()
        if not sep:
            raise AssignmentError(f"expected field=value, got {token!r}")
        if not key or any(not part for part in key.split(".")):
            raise AssignmentError(f"empty field name in {token!r}")
        target = result
        parts = key.split(".")
        for part in parts[:-1]:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise AssignmentError(f"{part!r} is set to a value and also used as a group in {token!r}")
            target = nested
        target[parts[-1]] = parse_value(value)
    return result


def format_duration(seconds: float | None) -> str:
    """`12 s`, `3 min 4 s`, `2 h 5 min`, `1 d 3 h`; an em dash for None."""
    if seconds is None:
        return "—"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def format_bytes(size: float) -> str:
    """`512 MiB`, `12.3 GiB`: memory sizes as every view shows them."""
    mib = float(size) / (1024 * 1024)
    return f"{mib / 1024:.1f} GiB" if mib >= 10 * 1024 else f"{mib:.0f} MiB"


def describe_fit(fit: dict[str, Any]) -> str:
    """The fit check of a validate or dry-run answer as text: the verdict, then each part of the estimate."""
    unknown = "unknown: " if fit.get("fits") is None else ""
    lines = [f"memory: {unknown}{fit.get('message', '')}"]
    for part in fit.get("estimate", {}).get("parts", []):
        lines.append(f"  {part['where']:4} {format_bytes(part['bytes']):>9}  {part['what']}")
    lines += [f"  note: {note}" for note in fit.get("estimate", {}).get("notes", [])]
    return "\n".join(lines)


def describe_progress(progress: dict[str, Any] | None, width: int = 24) -> str:
    """A loading record's progress as one line: phase, a bar (`width` > 0) and percentage when known, bytes and
    rate, time."""
    if not progress:
        return ""
    parts = [str(progress.get("phase", ""))]
    percent = progress.get("percent")
    if percent is not None:
        filled = round(width * float(percent) / 100)
        bar = f"[{'#' * filled}{'.' * (width - filled)}] " if width > 0 else ""
        parts.append(f"{bar}{float(percent):3.0f}%")
    if progress.get("bytes_done") is not None:
        total = progress.get("bytes_total")
        parts.append(format_bytes(progress["bytes_done"]) + (f" of {format_bytes(total)}" if total else ""))
        if progress.get("rate_bytes_per_s"):
            parts.append(f"at {format_bytes(progress['rate_bytes_per_s'])}/s")
    parts.append(f"({format_duration(progress.get('phase_elapsed_s'))} in this phase, "
                 f"{format_duration(progress.get('elapsed_s'))} in all)")
    return "  ".join(parts)


def describe_step(step: dict[str, Any]) -> str:
    """One benchmark step as a line: clients, TTFT, inter-token latency, tokens/s, requests/s, errors."""
    def ms(value: Any) -> str:
        return "—" if value is None else f"{float(value):.1f} ms"

    return (f"{step['concurrency']:>3} clients  TTFT p50 {ms(step.get('ttft_ms_p50'))} p95 {ms(step.get('ttft_ms_p95'))}  "
            f"ITL p50 {ms(step.get('itl_ms_p50'))}  {float(step.get('tokens_per_s') or 0):.1f} tok/s  "
            f"{float(step.get('requests_per_s') or 0):.2f} req/s  errors {step.get('errors', 0)}/{step.get('requests', 0)}")


def queue_summary(queue: dict[str, Any]) -> str:
    """A deployment's waiting line in words: waiting now, and since the server started, served and refused."""
    served, rejected = int(queue.get("served", 0)), int(queue.get("rejected", 0))
    text = f"{int(queue.get('depth', 0))} waiting"
    if served:
        text += f"; {served} served after a mean wait of {float(queue.get('mean_wait_s', 0.0)):.2f} s"
    if rejected:
        text += f"; {rejected} refused (queue full or waited too long)"
    return text


def share_summary(state: dict[str, Any]) -> str:
    """A deployment's JupyterHub share in words: who, what their keys carry, where the page is, who holds a key."""
    share = state.get("share_with") or {}
    names = [*share.get("users", []), *(f"group {g}" for g in share.get("groups", []))]
    if not names:
        lines = ["shared with nobody"]
    else:
        quotas = ", ".join(f"{k} {v}" for k, v in (share.get("quotas") or {}).items() if v is not None)
        lines = [f"shared with {', '.join(names)}: {share.get('role', 'inference')} keys, {share.get('priority')}"
                 + (f", {quotas}" if quotas else "")]
    lines.append(f"share page: {state['share_url']}" if state.get("share_url")
                 else "no share page: this server does not run under a JupyterHub")
    holders = [t.get("hub_user") for t in state.get("holders") or []]
    lines.append(f"keys held by: {', '.join(h for h in holders if h)}" if holders else "nobody holds a key yet")
    lines += [f"revoked: {t.get('hub_user')}'s key {t.get('prefix')}…" for t in state.get("revoked") or []]
    return "\n".join(lines)


def replica_summary(record: dict[str, Any]) -> str:
    """Where a deployment runs, in a word: `local`, or `ray 2/3` (replicas serving of all)."""
    if record.get("placement") != "ray":
        return "local"
    replicas = record.get("replicas") or []
    serving = sum(1 for r in replicas if r.get("state") == "serving")
    return f"ray {serving}/{len(replicas)}"


def replica_lines(record: dict[str, Any]) -> list[str]:
    """One line per replica of a Ray deployment (none for a local one): state, node, load, restarts."""
    if record.get("placement") != "ray":
        return []
    lines = []
    for r in record.get("replicas") or []:
        restarts = f", {r['restarts']} restart(s)" if r.get("restarts") else ""
        reason = f" ({r['reason']})" if r.get("reason") and r.get("state") != "serving" else ""
        lines.append(f"replica {r['id']}: {r['state']} on {r.get('node_ip') or '?'} node {(r.get('node') or '?')[:12]}, "
                     f"{r.get('in_flight', 0)} in flight, {r.get('requests', 0)} sent{restarts}{reason}")
    return lines
