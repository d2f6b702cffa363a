"""A failed deployment's status reason as one summary line and the engine lines behind it."""

from __future__ import annotations

import re

TELLING = re.compile(r"error|failed|failure|exception|not found|no such|invalid|cannot|unable|denied|out of memory",
                     re.IGNORECASE)


#: A log line's time and level prefix (llama.cpp: `0.00.011.456 E `), left out of the summary.
LOG_PREFIX = re.compile(r"^\d+(?:[.:]\d+)+\s+[A-Z]\s+")
PY_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*:")


def reason_parts(reason: str | None) -> tuple[str | None, list[str]]:
    """A status reason as one summary line and the raw engine lines behind it.

    The summary is how the engine ended plus the most telling engine line (the last one that
    names an error), so a user reads why in one line and opens the raw lines only if needed.
    """
    if not reason:
        return None, []
    head, *lines = reason.splitlines()
    head = head.rstrip(":").strip()
    telling = [LOG_PREFIX.sub("", line.strip()) for line in lines if TELLING.search(line)]
    # A Python traceback ends with its cause; other engines (llama.cpp) name the cause first.
    exception = [t for t in telling if PY_EXCEPTION.match(t)]
    cause = exception[-1] if exception else telling[0] if telling else None
    summary = f"{head}: {cause}" if cause else head
    if len(summary) > 240:
        summary = summary[:239] + "…"
    return summary, lines
