"""Request and response shapes of reranking: TEI's `/rerank` and the Cohere/Jina-style `/v1/rerank`.

No torch here: scores arrive as floats, in the order of the documents sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .protocol import ModelRequest


class RerankRequest(ModelRequest):
    """`POST /rerank` (text-embeddings-inference)."""

    query: str = Field(..., description="The query every text is scored against.")
    texts: list[str] = Field(..., description="The texts to score.")
    truncate: bool | None = Field(
        None, description="Cut query–text pairs longer than the model accepts (empty: no, too long is a 413)."
    )
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"
    raw_scores: bool = Field(False, description="The model's logits instead of its activation (sigmoid).")
    return_text: bool = Field(False, description="Put each text beside its score.")

    def items(self) -> list[str]:
        """The texts to score."""
        return list(self.texts)

    @property
    def truncate_left(self) -> bool:
        """Whether truncation keeps the end of a pair."""
        return self.truncation_direction.lower() == "left"


class RerankDocument(BaseModel):
    """A document given as an object (Cohere and Jina accept `{"text": ...}`)."""

    model_config = ConfigDict(extra="ignore")

    text: str


class CohereRerankRequest(ModelRequest):
    """`POST /v1/rerank` (Cohere / Jina style, as vLLM serves it)."""

    query: str = Field(..., description="The query every document is scored against.")
    documents: list[str | RerankDocument] = Field(..., description="Texts, or objects with a `text`.")
    top_n: int | None = Field(None, ge=1, description="Return only the N best documents.")
    return_documents: bool = Field(True, description="Put each document beside its score.")

    def items(self) -> list[str]:
        """The documents' texts."""
        return [d if isinstance(d, str) else d.text for d in self.documents]


def _ranked(scores: Sequence[float]) -> list[int]:
    """Document indices, best score first (ties keep the order sent)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def rerank_response(scores: Sequence[float], texts: Sequence[str], return_text: bool) -> list[dict[str, Any]]:
    """The body of a `/rerank` answer: `{index, score, text?}` per text, best first."""
    ranks: list[dict[str, Any]] = []
    for i in _ranked(scores):
        rank: dict[str, Any] = {"index": i, "score": scores[i]}
        if return_text:
            rank["text"] = texts[i]
        ranks.append(rank)
    return ranks


def cohere_rerank_response(
    model: str,
    scores: Sequence[float],
    texts: Sequence[str],
    top_n: int | None,
    return_documents: bool,
    tokens: int,
) -> dict[str, Any]:
    """The body of a `/v1/rerank` answer: the best `top_n` results, with `relevance_score`."""
    results: list[dict[str, Any]] = []
    for i in _ranked(scores)[:top_n]:
        result: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if return_documents:
            result["document"] = {"text": texts[i]}
        results.append(result)
    return {"model": model, "results": results, "usage": {"total_tokens": tokens}}
