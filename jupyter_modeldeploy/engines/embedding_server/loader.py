"""Model inspection and loading: where a model lives, its pooling, dtype, and its forward pass.

`inspect_entry` runs before torch is imported and refuses what cannot work (a missing
model, `splade` on a model without a masked-LM head, `rerank` on a model without a
one-label classification head), so a bad config fails at launch. `ModelRuntime` holds one
loaded model, built from its own entry (pooling, dtype, task: two entries of one folder
are two models), and is what the memory manager moves around.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...config.embedding import EmbeddingModelEntry

#: Architectures whose weights carry a masked-LM head (what SPLADE pooling reads).
_MLM_SUFFIXES = ("ForMaskedLM", "ForPreTraining")
#: Architectures with a classification head (what a cross-encoder scores with).
_CLASSIFIER_SUFFIX = "ForSequenceClassification"


class LaunchError(Exception):
    """A configuration the server cannot serve; the message is one line, for stderr."""


class InvalidInput(Exception):
    """An input the model cannot take (a token id outside its vocabulary, an unknown prompt)."""


class InputTooLong(Exception):
    """An input has more tokens than the model accepts and truncation was not asked for."""

    def __init__(self, index: int, tokens: int, limit: int) -> None:
        super().__init__(
            f"input {index} has {tokens} tokens, more than the model's {limit}; "
            "shorten it or send truncate=true"
        )


@dataclass(frozen=True)
class ModelSource:
    """Where one model entry's files are and how it will be pooled."""

    name: str
    path: str
    sparse: bool  # SPLADE: vocabulary-sized sparse vectors, served by /embed_sparse
    architectures: tuple[str, ...]
    own_splade: bool = False  # the folder is a SPLADE sentence-transformers model already
    rerank: bool = False  # a cross-encoder: scores query-text pairs, served by /rerank


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def resolve_path(entry: EmbeddingModelEntry) -> str:
    """The local folder of the model: the path itself, or the Hub snapshot (honours HF_HUB_OFFLINE)."""
    local = Path(entry.model).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if local.is_absolute() or entry.model.startswith((".", "~")):
        raise LaunchError(f"model {entry.name}: folder {entry.model} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id=entry.model, revision=entry.revision)
    except Exception as exc:  # the hub raises many kinds; all mean "not available"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LaunchError(
            f"model {entry.name}: cannot get {entry.model!r} from the Hugging Face Hub: {reason}"
        ) from None


def inspect_entry(entry: EmbeddingModelEntry) -> ModelSource:
    """Resolve a model entry and check its pooling against the model's files, without torch."""
    path = resolve_path(entry)
    config = _read_json(Path(path) / "config.json")
    if not isinstance(config, dict):
        raise LaunchError(
            f"model {entry.name}: {path} has no readable config.json (not a transformers model)"
        )
    architectures = tuple(str(a) for a in config.get("architectures") or ())
    if entry.task == "rerank":
        _check_reranker(entry, config, architectures)
        return ModelSource(entry.name, path, False, architectures, rerank=True)
    modules = _read_json(Path(path) / "modules.json") or []
    own_splade = any("SpladePooling" in str(m.get("type", "")) for m in modules if isinstance(m, dict))
    if entry.pooling == "splade":
        if not (own_splade or any(a.endswith(_MLM_SUFFIXES) for a in architectures)):
            found = ", ".join(architectures) or "no architecture"
            raise LaunchError(
                f"model {entry.name}: pooling 'splade' needs a masked-LM model (an ...ForMaskedLM "
                f"architecture); {entry.model} is {found}"
            )
        sparse = True
    else:
        sparse = entry.pooling is None and own_splade
    return ModelSource(entry.name, path, sparse, architectures, own_splade)


def _check_reranker(entry: EmbeddingModelEntry, config: dict[str, Any], architectures: tuple[str, ...]) -> None:
    """Refuse `task: rerank` on a model that is not a one-score cross-encoder."""
    if not any(a.endswith(_CLASSIFIER_SUFFIX) for a in architectures):
        found = ", ".join(architectures) or "no architecture"
        raise LaunchError(
            f"model {entry.name}: task 'rerank' needs a cross-encoder (an ...{_CLASSIFIER_SUFFIX} "
            f"architecture); {entry.model} is {found}"
        )
    labels = len(config.get("id2label") or {}) or int(config.get("num_labels") or 1)
    if labels != 1:
        raise LaunchError(
            f"model {entry.name}: task 'rerank' needs a cross-encoder with one score; "
            f"{entry.model} is a classifier with {labels} labels"
        )


def pick_device() -> str:
    """The device models serve from: the first visible GPU, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ModelRuntime:
    """One loaded model: tokenizer, forward pass, and the moves the memory manager asks for."""

    def __init__(
        self, entry: EmbeddingModelEntry, source: ModelSource, device: str, keep_threshold_bytes: int = 0
    ) -> None:
        self.entry = entry
        self.source = source
        self.device = device
        self.keep_threshold_bytes = keep_threshold_bytes
        self.module: Any = None
        self.tokenizer: Any = None
        self.max_input_length = 512
        self.dimensions = 0
        self.pooling = "splade" if source.sparse else (entry.pooling or "")
        self.normalizes = False
        self.prompt = ""  # the model's default prompt, put before texts that name none
        self.prompts: dict[str, str] = {}  # the model's named prompts (`prompt_name`)
        self.vocab_size = 0
        self.labels: dict[str, str] = {}  # a cross-encoder's id2label
        self.activation: Any = None  # a cross-encoder's score activation (sigmoid, usually)
        self._local = threading.local()

    @property
    def sparse(self) -> bool:
        """Whether this model gives SPLADE sparse vectors."""
        return self.source.sparse

    @property
    def rerank(self) -> bool:
        """Whether this model is a cross-encoder that scores query-text pairs."""
        return self.source.rerank

    # --- loading -----------------------------------------------------------------------

    def _build(self) -> Any:
        from sentence_transformers import CrossEncoder, SentenceTransformer, SparseEncoder
        from sentence_transformers.base.modules import Transformer
        from sentence_transformers.sparse_encoder.modules import SpladePooling

        path, pooling = self.source.path, self.entry.pooling
        if self.source.rerank:
            return CrossEncoder(path, device="cpu")
        if self.source.sparse:
            if self.source.own_splade:
                return SparseEncoder(path, device="cpu")
            return SparseEncoder(
                modules=[Transformer(path, transformer_task="fill-mask"), SpladePooling("max")], device="cpu"
            )
        model = SentenceTransformer(path, device="cpu")
        if pooling in ("cls", "mean"):
            self._set_pooling(model, pooling)
        return model

    def _set_pooling(self, model: Any, mode: str) -> None:
        from sentence_transformers.sentence_transformer.modules import Pooling

        for key, module in model._modules.items():
            if isinstance(module, Pooling):
                model._modules[key] = Pooling(
                    module.embedding_dimension, pooling_mode=mode, include_prompt=module.include_prompt
                )
                return
        raise LaunchError(f"model {self.entry.name}: has no pooling module to set to {mode!r}")

    def load(self) -> int:
        """Load the model into CPU RAM in its dtype; return its size in bytes."""
        import torch
        from sentence_transformers.base.modules import Normalize

        model = self._build()
        # A trailing Normalize is applied by the server instead, so /embed can skip it (normalize=false).
        keys = list(model._modules)
        normalizes = False
        while keys and isinstance(model._modules[keys[-1]], Normalize):
            del model._modules[keys.pop()]
            normalizes = True
        dtype = getattr(torch, self.entry.dtype)
        model.to(dtype)
        model.eval()
        first = model._modules[keys[0]]
        self.tokenizer = first.tokenizer
        self._local = threading.local()
        self.max_input_length = int(model.max_seq_length or self.tokenizer.model_max_length)
        self.normalizes = normalizes
        self.prompts = {str(k): str(v) for k, v in (getattr(model, "prompts", None) or {}).items()}
        if getattr(model, "default_prompt_name", None):
            self.prompt = self.prompts.get(model.default_prompt_name, "")
        config = first.auto_model.config
        self.vocab_size = int(config.vocab_size)
        if self.source.rerank:
            self.labels = {str(k): str(v) for k, v in (config.id2label or {}).items()}
            self.activation = model.activation_fn
        elif self.source.sparse:
            self.dimensions = self.vocab_size
        else:
            self.dimensions = int(model.get_embedding_dimension())
            pooling_mode = next(
                (getattr(m, "pooling_mode", None) for m in model if hasattr(m, "pooling_mode")), None
            )
            if pooling_mode:
                self.pooling = pooling_mode if isinstance(pooling_mode, str) else "+".join(pooling_mode)
        self.module = model
        return self.size_bytes()

    def _tensors(self) -> list[Any]:
        return [*self.module.parameters(), *self.module.buffers()]

    def size_bytes(self) -> int:
        """Bytes of the model's parameters and buffers."""
        return sum(t.numel() * t.element_size() for t in self._tensors())

    def to_device(self) -> None:
        """Put every tensor on the serving device (a no-op on a CPU-only host)."""
        if self.device != "cpu":
            self.module.to(self.device)

    def offload(self) -> int:
        """Move tensors of at least the threshold to CPU RAM; return the bytes left on the device.

        On a CPU-only host the model already is in RAM: only the bookkeeping changes.
        """
        import torch

        kept = 0
        for module in self.module.modules():
            for store in (module._parameters, module._buffers):
                for key, tensor in store.items():
                    if tensor is None:
                        continue
                    nbytes = tensor.numel() * tensor.element_size()
                    if nbytes < self.keep_threshold_bytes:
                        kept += nbytes
                    elif self.device != "cpu":
                        if isinstance(tensor, torch.nn.Parameter):
                            tensor.data = tensor.data.to("cpu")
                        else:
                            store[key] = tensor.to("cpu")
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        return kept

    def unload(self) -> None:
        """Drop the weights; the next `load` reads them from disk again."""
        import torch

        # The module sits in reference cycles, so dropping it frees nothing until a full
        # gc.collect() (about 0.4 s with torch loaded). Emptying its tensors frees the memory now.
        for module in self.module.modules():
            for store in (module._parameters, module._buffers):
                for key, tensor in store.items():
                    if tensor is None:
                        continue
                    if isinstance(tensor, torch.nn.Parameter):
                        tensor.data = torch.empty(0, dtype=tensor.dtype)
                    else:
                        store[key] = torch.empty(0, dtype=tensor.dtype)
        self.module = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    # --- serving -----------------------------------------------------------------------

    def _thread_tokenizer(self) -> Any:
        # Fast tokenizers change their truncation state on each call: one copy per thread.
        tokenizer = getattr(self._local, "tokenizer", None)
        if tokenizer is None:
            tokenizer = copy.deepcopy(self.tokenizer)
            self._local.tokenizer = tokenizer
        return tokenizer

    def prompt_for(self, name: str | None) -> str:
        """The text put before each input: the named prompt, else the model's default one."""
        if name is None:
            return self.prompt
        if name not in self.prompts:
            known = ", ".join(sorted(self.prompts)) or "none"
            raise InvalidInput(f"prompt_name {name!r} is not a prompt of model {self.entry.name} (its prompts: {known})")
        return self.prompts[name]

    def _check_lengths(self, rows: list[dict[str, list[int]]]) -> None:
        for i, row in enumerate(rows):
            if len(row["input_ids"]) > self.max_input_length:
                raise InputTooLong(i, len(row["input_ids"]), self.max_input_length)

    def _id_row(self, index: int, ids: list[int], truncate: bool, left: bool) -> dict[str, list[int]]:
        """Features for token ids sent as they are (no special tokens added, no prompt)."""
        bad = next((t for t in ids if t >= self.vocab_size), None)
        if bad is not None:
            raise InvalidInput(f"input {index}: token id {bad} is outside the vocabulary (size {self.vocab_size})")
        if truncate and len(ids) > self.max_input_length:
            ids = ids[-self.max_input_length :] if left else ids[: self.max_input_length]
        row = {"input_ids": list(ids), "attention_mask": [1] * len(ids)}
        if "token_type_ids" in self.tokenizer.model_input_names:
            row["token_type_ids"] = [0] * len(ids)
        return row

    def tokenize(
        self, items: list[str | list[int]], truncate: bool, prompt: str = "", left: bool = False
    ) -> list[dict[str, list[int]]]:
        """Tokenize each input (no padding); token-id inputs are taken as they are.

        Raises InputTooLong when one is too long and not truncated, InvalidInput for a token id
        outside the vocabulary.
        """
        rows: list[dict[str, list[int]] | None] = [None] * len(items)
        texts = [(i, item) for i, item in enumerate(items) if isinstance(item, str)]
        for i, item in enumerate(items):
            if not isinstance(item, str):
                rows[i] = self._id_row(i, item, truncate, left)
        if texts:
            tokenizer = self._thread_tokenizer()
            tokenizer.truncation_side = "left" if left else "right"
            encoded = tokenizer(
                [prompt + text for _, text in texts],
                truncation=truncate,
                max_length=self.max_input_length if truncate else None,
                padding=False,
                verbose=False,
            )
            keys = list(encoded.keys())
            for n, (i, _) in enumerate(texts):
                rows[i] = {k: encoded[k][n] for k in keys}
        done = [row for row in rows if row is not None]
        if not truncate:
            self._check_lengths(done)
        return done

    def tokenize_pairs(
        self, query: str, texts: list[str], truncate: bool, left: bool = False
    ) -> list[dict[str, list[int]]]:
        """Tokenize (query, text) pairs for a cross-encoder; InputTooLong as `tokenize`."""
        tokenizer = self._thread_tokenizer()
        tokenizer.truncation_side = "left" if left else "right"
        encoded = tokenizer(
            [query] * len(texts),
            texts,
            truncation="longest_first" if truncate else False,
            max_length=self.max_input_length if truncate else None,
            padding=False,
            verbose=False,
        )
        keys = list(encoded.keys())
        rows = [{k: encoded[k][i] for k in keys} for i in range(len(texts))]
        if not truncate:
            self._check_lengths(rows)
        return rows

    def forward(self, rows: list[dict[str, list[int]]]) -> Any:
        """Run one batch of tokenized inputs: a float32 CPU tensor, one row per input.

        An embedding model gives its vectors (not normalized); a cross-encoder its logits.
        """
        import torch

        features = self.tokenizer.pad(rows, padding=True, return_tensors="pt")
        features = {k: v.to(self.device) for k, v in features.items()}
        key = "scores" if self.rerank else "sentence_embedding"
        with torch.inference_mode():
            output = self.module.forward(features)[key]
        if output.is_sparse:
            output = output.to_dense()
        return output.float().cpu()
