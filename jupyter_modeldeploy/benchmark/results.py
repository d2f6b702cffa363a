"""Benchmark results on disk (one JSON file each, with the configuration they ran on), reloaded, exported."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

STEP_COLUMNS = ("concurrency", "requests", "errors", "ttft_ms_p50", "ttft_ms_p95", "itl_ms_p50", "itl_ms_p95",
                "tokens_per_s", "requests_per_s", "duration_s")


def results_dir() -> Path:
    """Where results are kept: MODELDEPLOY_BENCH_DIR, else `modeldeploy/benchmarks` in Jupyter's data folder."""
    env = os.environ.get("MODELDEPLOY_BENCH_DIR")
    if env:
        return Path(env)
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "modeldeploy" / "benchmarks"


def _secretless(result: dict[str, Any]) -> dict[str, Any]:
    config = {k: v for k, v in (result.get("config") or {}).items() if k not in ("api_key", "hf_token")}
    return {**result, "config": config}


def save(result: dict[str, Any], folder: Path | None = None) -> Path:
    """Write a result (secrets left out of its configuration); returns its file."""
    folder = folder or results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result['id']}.json"
    path.write_text(json.dumps(_secretless(result), indent=1))
    return path


def load_all(folder: Path | None = None) -> list[dict[str, Any]]:
    """Every saved result, oldest first (unreadable files left out)."""
    folder = folder or results_dir()
    found = []
    for path in sorted(folder.glob("b-*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("steps"), list):
            found.append(data)
    return sorted(found, key=lambda r: r.get("started_at") or 0)


def to_csv(results: list[dict[str, Any]]) -> str:
    """One row per step of every result, with what it ran against (comparable across deployments)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "deployment", "kind", "model", "prompt_chars", "max_tokens", *STEP_COLUMNS])
    for result in results:
        settings = result.get("settings") or {}
        for step in result.get("steps") or []:
            writer.writerow([result.get("id"), result.get("deployment"), result.get("kind"), result.get("model"),
                             len(settings.get("prompt") or ""), settings.get("max_tokens"),
                             *(step.get(c) for c in STEP_COLUMNS)])
    return out.getvalue()


def to_json(results: list[dict[str, Any]]) -> str:
    """The results as one JSON document (secrets left out)."""
    return json.dumps([_secretless(r) for r in results], indent=1)
