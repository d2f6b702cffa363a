"""Step 5: the report, `gpu-report.json` (everything) and `gpu-report.md` (a page to read), small enough to return."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .steps import Step

MAX_SERIES = 40  # samples of a series kept in the report


def _compact(value: Any) -> Any:
    if isinstance(value, list) and len(value) > MAX_SERIES:
        stride = -(-len(value) // MAX_SERIES)
        return value[::stride]
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    return value


def write(out: Path, steps: list[Step], about: dict[str, Any]) -> tuple[Path, Path]:
    """Write both files into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    data = {**about, "steps": [_compact(s.to_json()) for s in steps],
            "passed": bool(about.get("complete")) and all(s.status != "failed" for s in steps)}
    json_path = out / "gpu-report.json"
    json_path.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    md_path = out / "gpu-report.md"
    md_path.write_text(markdown(data), encoding="utf-8")
    return md_path, json_path


def markdown(data: dict[str, Any]) -> str:
    """The report as Markdown: what ran where, then each step's status, checks and figures (in the order run)."""
    verdict = "passed" if data["passed"] else "FAILED" if data.get("complete") else "INCOMPLETE (cut short)"
    lines = [f"# GPU check: {verdict} ({data['mode']})", ""]
    lines += [f"- {k}: {v}" for k, v in data["versions"].items()]
    lines += [f"- models: {v}" for v in data.get("models", {}).values()]
    lines += [f"- total: {data['seconds']:.0f} s", "", "| step | status | seconds |", "| --- | --- | --- |"]
    for step in data["steps"]:
        lines.append(f"| {step['number']} {step['title']} | {step['status']} | {step['seconds']:.1f} |")
    for step in data["steps"]:
        lines += ["", f"## {step['number']} {step['title']}: {step['status']}", ""]
        if step["error"]:
            lines += ["```", step["error"], "```", ""]
        for check in step["checks"]:
            lines.append(f"- [{'x' if check['passed'] else ' '}] {check['check']}" +
                         (f": {check['detail']}" if check["detail"] else ""))
        figures = {k: v for k, v in step["figures"].items() if k != "series"}
        if figures:
            lines += ["", "```json", json.dumps(figures, indent=1, default=str), "```"]
    return "\n".join(lines) + "\n"
