"""The serving API an engine declares: the routes a deployment key may reach, and nothing else.

The gateway forwards a request only when its method and normalised path are in the engine's
table (an allow-list). Control and introspection routes (llama.cpp's `/slots`, `POST /props`,
`/lora-adapters`, vLLM's dev-mode and RL routes, a web UI) are simply not declared, so a new
engine version that adds one stays closed until somebody declares it here on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

#: The API a route speaks, which shapes the gateway's own errors on it: OpenAI's
#: `{"error": {"message", "type", "code"}}`, TEI's `{"error", "error_type"}` or Anthropic's
#: `{"type": "error", "error": {"type", "message"}}`.
Dialect = Literal["openai", "tei", "anthropic"]

READ = frozenset({"GET", "HEAD"})
WRITE = frozenset({"POST"})


@dataclass(frozen=True)
class ServedRoute:
    """One engine path the serving API exposes.

    `model_scoped` routes also exist per model: `<endpoint>/<model><path>` is forwarded to the
    engine's own `/<model><path>` (a TEI-style `/<model>/info`), not to `<path>` for all models.
    """

    path: str
    methods: frozenset[str]
    model_scoped: bool = False
    dialect: Dialect = "openai"


@dataclass(frozen=True)
class RouteTable:
    """The allow-list of one engine: exact paths and the methods each takes."""

    routes: tuple[ServedRoute, ...] = ()
    _by_path: dict[str, ServedRoute] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for route in self.routes:
            self._by_path[route.path] = route

    def find(self, path: str) -> ServedRoute | None:
        """The route declared for an exact path, if any."""
        return self._by_path.get(path)

    def dialect(self, path: str) -> Dialect:
        """The API the route at `path` speaks (OpenAI's where none is declared)."""
        route = self._by_path.get(path)
        return route.dialect if route is not None else "openai"

    def paths(self) -> list[str]:
        """Every declared path, sorted (for documentation and error messages)."""
        return sorted(self._by_path)

    def __add__(self, other: RouteTable) -> RouteTable:
        return RouteTable(self.routes + other.routes)


def routes(methods: frozenset[str], paths: Iterable[str], *, model_scoped: bool = False,
           dialect: Dialect = "openai") -> RouteTable:
    """A table of several paths taking the same methods."""
    return RouteTable(tuple(ServedRoute(p, methods, model_scoped, dialect) for p in paths))


HEALTH = routes(READ, ["/health"])
OPENAI_MODELS = routes(READ, ["/v1/models"])
OPENAI_GENERATION = routes(WRITE, ["/v1/chat/completions", "/v1/completions", "/v1/responses"])
OPENAI_EMBEDDINGS = routes(WRITE, ["/v1/embeddings"])
ANTHROPIC = routes(WRITE, ["/v1/messages", "/v1/messages/count_tokens"], dialect="anthropic")
TOKENIZER = routes(WRITE, ["/tokenize", "/detokenize"])
RERANK = routes(WRITE, ["/rerank", "/v1/rerank"])

LLAMA_SERVER = (
    HEALTH + OPENAI_MODELS + OPENAI_GENERATION + OPENAI_EMBEDDINGS + ANTHROPIC + TOKENIZER + RERANK
    + routes(READ, ["/v1/health", "/models", "/props"])  # GET /props only: POST /props changes the engine
    + routes(WRITE, [
        "/chat/completions", "/completions", "/completion", "/embeddings", "/embedding", "/infill",
        "/apply-template", "/reranking", "/v1/reranking",
    ])
)
"""llama-server: OpenAI, Anthropic and its own serving routes; no /slots, /lora-adapters, POST /props."""

LLAMA_CPP_PYTHON = (
    OPENAI_MODELS + OPENAI_GENERATION + OPENAI_EMBEDDINGS
    + routes(WRITE, ["/extras/tokenize", "/extras/tokenize/count", "/extras/detokenize"])
)
"""llama-cpp-python's server (the fallback): its OpenAI routes and tokenizer extras."""

VLLM = (
    HEALTH + OPENAI_MODELS + OPENAI_GENERATION + OPENAI_EMBEDDINGS + ANTHROPIC + TOKENIZER + RERANK
    + routes(READ, ["/version", "/ping"])
    + routes(WRITE, ["/pooling", "/classify", "/score", "/v1/score", "/v2/rerank"])
)
"""vLLM's OpenAI server: serving routes only; no dev-mode, sleep, RPC, LoRA-loading or RL routes."""

EMBEDDING_SERVER = (
    HEALTH + OPENAI_MODELS + OPENAI_EMBEDDINGS + routes(WRITE, ["/v1/rerank"])
    + routes(WRITE, ["/embed", "/embed_sparse", "/rerank"], dialect="tei")
    + routes(READ, ["/info"], model_scoped=True, dialect="tei")
)
"""The project's sentence-transformers server: OpenAI and TEI routes, `/<model>/info` per model."""
