"""HTTP surface of the embedding server: tornado handlers and routes.

Every route but `/health` needs the engine key (`Authorization: Bearer` or `x-api-key`).
Each model answers at `/<name>/...` and by the request's `model` field; without either,
the first model answers. TEI's routes (`/embed`, `/embed_sparse`, `/rerank`, `/info`)
answer errors in TEI's shape, the OpenAI-style ones (`/v1/...`) in OpenAI's.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any

import tornado.web

from ...config.embedding import EmbeddingConfig
from .info import model_info, tei_fields
from .loader import InputTooLong, InvalidInput
from .memory import MemoryManager
from .metrics import Metrics
from .protocol import (
    ApiError,
    EmbedRequest,
    EmbedSparseRequest,
    ErrorStyle,
    OpenAIEmbeddingRequest,
    check_batch,
    check_dimensions,
    encode_base64,
    error_body,
    invalid,
    models_response,
    openai_response,
    parse_request,
    sparse_response,
    tei_error_body,
    tei_error_type,
)
from .rerank_protocol import CohereRerankRequest, RerankRequest, cohere_rerank_response, rerank_response
from .service import ModelService, Overloaded

log = logging.getLogger(__name__)

#: Bodies past this many times the largest payload limit are cut off by tornado itself.
BODY_HARD_CAP_FACTOR = 8


class ServerState:
    """What the handlers share: the config, the models' services, metrics, memory, the key."""

    def __init__(
        self,
        config: EmbeddingConfig,
        services: dict[str, ModelService],
        memory: MemoryManager,
        metrics: Metrics,
        api_key: str,
        device: str,
    ) -> None:
        self.config = config
        self.services = services
        self.memory = memory
        self.metrics = metrics
        self.api_key = api_key.encode("utf-8")
        self.device = device
        self.ready = False
        self.created = int(time.time())
        # A model path names an entry only when one entry uses it: entries of one folder differ
        # in their settings (pooling, dtype, task), so the path alone cannot pick one.
        self._aliases: dict[str, list[str]] = {}
        for entry in config.models:
            self._aliases.setdefault(entry.model, []).append(entry.name)
        self.max_payload = max(entry.payload_limit_bytes for entry in config.models)

    def resolve(self, name: str | None) -> ModelService:
        """The service for a served name (or model path); the first model when none is given."""
        if name is None:
            return next(iter(self.services.values()))
        service = self.services.get(name)
        if service is not None:
            return service
        entries = self._aliases.get(name, [])
        if len(entries) == 1:
            return self.services[entries[0]]
        if entries:
            raise ApiError(
                404,
                f"model {name!r} is served as {len(entries)} entries with their own settings: "
                f"name one of {', '.join(entries)}",
                "invalid_request_error",
                "model_not_found",
            )
        raise ApiError(
            404,
            f"model {name!r} is not served here; available: {', '.join(self.services)}",
            "invalid_request_error",
            "model_not_found",
        )

    def model_info(self, service: ModelService) -> dict[str, Any]:
        """A model's `/info`: TEI's fields, then its settings and memory state."""
        return model_info(service, self.memory)


class BaseHandler(tornado.web.RequestHandler):
    """JSON errors, the key check, and request counting."""

    endpoint = ""
    needs_key = True
    error_style: ErrorStyle = "openai"

    def initialize(self, state: ServerState) -> None:
        self.state = state
        self.model_label = ""
        self._task: asyncio.Task[None] | None = None

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")

    def prepare(self) -> None:
        if self.needs_key and not self._key_ok():
            self.send_api_error(
                ApiError(401, "missing or wrong API key", "authentication_error", "invalid_api_key")
            )

    def _key_ok(self) -> bool:
        header = self.request.headers.get("Authorization", "")
        given = (
            header[7:].strip()
            if header[:7].lower() == "bearer "
            else self.request.headers.get("x-api-key", "")
        )
        return hmac.compare_digest(given.encode("utf-8"), self.state.api_key)

    def send_api_error(self, error: ApiError) -> None:
        """Answer with the error in the route's style (OpenAI's or TEI's)."""
        if self._finished:
            return
        self.clear()
        self.set_status(error.status)
        self.finish(error.body(self.error_style))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        reason = self._reason or "error"
        if self.error_style == "tei":
            self.finish(tei_error_body(reason, tei_error_type(status_code)))
            return
        kind = "server_error" if status_code >= 500 else "invalid_request_error"
        self.finish(error_body(reason, kind, None))

    def write_json(self, data: Any) -> None:
        """Finish with a JSON body."""
        self.finish(json.dumps(data, separators=(",", ":")))

    def on_finish(self) -> None:
        if self.endpoint:
            self.state.metrics.requests.labels(self.model_label, self.endpoint, str(self.get_status())).inc()


class NotFoundHandler(BaseHandler):
    """Any other path: a JSON 404."""

    def prepare(self) -> None:
        self.send_api_error(
            ApiError(404, f"no route {self.request.path}", "invalid_request_error", "not_found")
        )


class HealthHandler(BaseHandler):
    """`GET /health`: 200 once every model loaded, 503 before; no key needed."""

    needs_key = False

    def get(self, model: str | None = None) -> None:
        if model is not None and model not in self.state.services:
            self.send_api_error(
                ApiError(
                    404, f"model {model!r} is not served here", "invalid_request_error", "model_not_found"
                )
            )
            return
        if not self.state.ready:
            self.set_status(503)
            self.write_json({"status": "loading"})
            return
        self.write_json({"status": "ok"})


class MetricsHandler(BaseHandler):
    """`GET /metrics`: Prometheus text."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.state.metrics.render())


class InfoHandler(BaseHandler):
    """`GET /info` and `GET /<model>/info` (or `/info?model=<model>`), TEI's fields first.

    With a model: that model's info. Without: TEI's fields of the first model (the one that
    answers requests naming none), then the deployment's device, memory and every model.
    """

    error_style = "tei"

    def get(self, model: str | None = None) -> None:
        model = model or self.get_query_argument("model", None) or None
        try:
            if model is not None:
                self.write_json(self.state.model_info(self.state.resolve(model)))
                return
        except ApiError as exc:
            self.send_api_error(exc)
            return
        memory = self.state.memory
        models = [self.state.model_info(s) for s in self.state.services.values()]
        self.write_json(
            {
                **tei_fields(models[0]),
                "device": self.state.device,
                "threads": self.state.config.threads,
                "memory": {
                    "budget_bytes": memory.budget_bytes,
                    "used_bytes": memory.used_bytes(),
                    "eviction": memory.mode if memory.budget_bytes is not None else None,
                },
                "models": models,
            }
        )


class ModelsHandler(BaseHandler):
    """`GET /v1/models` (OpenAI)."""

    def get(self, model: str | None = None) -> None:
        try:
            names = [self.state.resolve(model).name] if model else list(self.state.services)
        except ApiError as exc:
            self.send_api_error(exc)
            return
        self.write_json(models_response(names, self.state.created))


@tornado.web.stream_request_body
class PostHandler(BaseHandler):
    """A POST endpoint: the body is read up to the payload limit, then `handle` runs."""

    request_class: type = OpenAIEmbeddingRequest

    def initialize(self, state: ServerState) -> None:
        super().initialize(state)
        self._chunks: list[bytes] = []
        self._size = 0

    def prepare(self) -> None:
        super().prepare()
        if self._finished:
            return
        # Bodies over the limit are still read (and dropped) so the client gets its 413.
        self.request.connection.set_max_body_size(self.state.max_payload * BODY_HARD_CAP_FACTOR)
        if not self.state.ready:
            self.send_api_error(ApiError(503, "the models are still loading", "server_error", "loading"))

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self.state.max_payload and not self._finished:
            self._chunks.append(chunk)

    async def post(self, model: str | None = None) -> None:
        self._task = asyncio.ensure_future(self._run(model))
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    def on_connection_close(self) -> None:
        # The client went away: its queued inputs are dropped before they cost inference.
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _run(self, model: str | None) -> None:
        try:
            service = self.state.resolve(model) if model else None
            limit = service.entry.payload_limit_bytes if service else self.state.max_payload
            self._check_size(limit)
            try:
                body = json.loads(b"".join(self._chunks) or b"null")
            except ValueError as exc:
                raise ApiError(
                    400, f"the body is not valid JSON: {exc}", "invalid_request_error", "invalid_json"
                ) from None
            request = parse_request(self.request_class, body)
            if service is None:
                service = self.state.resolve(request.model)
                self._check_size(service.entry.payload_limit_bytes)
            self.model_label = service.name
            items = request.items()
            check_batch(items, service.entry.max_client_batch_size)
            try:
                service.admit()
            except Overloaded as exc:
                raise ApiError(429, str(exc), "rate_limit_error", "too_many_requests") from None
            try:
                result = await self.handle(service, request, items)
            finally:
                service.release()
        except InputTooLong as exc:
            self._refuse(ApiError(413, str(exc), "invalid_request_error", "input_too_long"))
            return
        except InvalidInput as exc:
            self._refuse(invalid(str(exc), "invalid_input"))
            return
        except ApiError as exc:
            self._refuse(exc)
            return
        except Exception as exc:  # inference failed: TEI says 424 (Backend), OpenAI 500
            log.exception("%s for model %s failed", self.endpoint, self.model_label or "-")
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            status = 424 if self.error_style == "tei" else 500
            self.send_api_error(ApiError(status, f"inference failed: {first}", "server_error", "inference_failed"))
            return
        self.write_json(result)

    def _refuse(self, error: ApiError) -> None:
        # 429s are counted where they happen (the service's admission), as "overloaded".
        if error.status in (413, 422):
            self.state.metrics.rejected.labels(self.model_label or "-", error.code).inc()
        self.send_api_error(error)

    def _check_size(self, limit: int) -> None:
        if self._size > limit:
            raise ApiError(
                413,
                f"the request body has {self._size} bytes, more than the limit of {limit} "
                "(payload_limit_bytes)",
                "invalid_request_error",
                "payload_too_large",
            )

    async def handle(self, service: ModelService, request: Any, items: list[Any]) -> Any:
        """Answer one admitted request."""
        raise NotImplementedError


def _dense_only(service: ModelService) -> None:
    if service.runtime.rerank:
        raise invalid(f"model {service.name} is a reranker: use /rerank or /v1/rerank", "rerank_model")
    if service.runtime.sparse:
        raise invalid(f"model {service.name} is a SPLADE model: use /embed_sparse", "sparse_model")


def _rerank_only(service: ModelService) -> None:
    if not service.runtime.rerank:
        raise invalid(
            f"model {service.name} is not a reranker (task: rerank): use /embed or /v1/embeddings",
            "not_a_reranker",
        )


class OpenAIEmbeddingsHandler(PostHandler):
    """`POST /v1/embeddings` (OpenAI): vectors as the model's `encode` gives them."""

    endpoint = "/v1/embeddings"
    request_class = OpenAIEmbeddingRequest

    async def handle(self, service: ModelService, request: Any, items: list[Any]) -> Any:
        _dense_only(service)
        check_dimensions(request.dimensions, service.runtime.dimensions)
        rows, tokens = await service.embed(items, truncate=True, prompt=service.runtime.prompt_for(None))
        matrix = service.postprocess(rows, service.runtime.normalizes, request.dimensions)
        if request.encoding_format == "base64":
            embeddings: list[Any] = [encode_base64(row.numpy().astype("<f4").tobytes()) for row in matrix]
        else:
            embeddings = matrix.tolist()
        return openai_response(service.name, embeddings, tokens)


class EmbedHandler(PostHandler):
    """`POST /embed` (text-embeddings-inference): a list of vectors."""

    endpoint = "/embed"
    error_style = "tei"
    request_class = EmbedRequest

    async def handle(self, service: ModelService, request: Any, items: list[Any]) -> Any:
        _dense_only(service)
        check_dimensions(request.dimensions, service.runtime.dimensions)
        rows, _ = await service.embed(items, **_tei_tokenizing(service, request))
        return service.postprocess(rows, request.normalize, request.dimensions).tolist()


def _tei_tokenizing(service: ModelService, request: Any) -> dict[str, Any]:
    """How a TEI request's inputs are tokenized: truncation, its end, the prompt."""
    if request.prompt_name is not None and any(not isinstance(i, str) for i in request.items()):
        raise invalid("prompt_name applies to texts; token-id inputs are used as they are", "invalid_input")
    return {
        "truncate": bool(request.truncate),
        "prompt": service.runtime.prompt_for(request.prompt_name),
        "left": request.truncate_left,
    }


class EmbedSparseHandler(PostHandler):
    """`POST /embed_sparse` (text-embeddings-inference): non-zero `{index, value}` pairs per input."""

    endpoint = "/embed_sparse"
    error_style = "tei"
    request_class = EmbedSparseRequest

    async def handle(self, service: ModelService, request: Any, items: list[Any]) -> Any:
        if not service.runtime.sparse:
            raise invalid(f"model {service.name} is not a SPLADE model: use /embed", "dense_model")
        rows, _ = await service.embed(items, **_tei_tokenizing(service, request))
        return sparse_response([service.sparse_pairs(row) for row in rows])


class RerankHandler(PostHandler):
    """`POST /rerank` (text-embeddings-inference): `{index, score, text?}` per text, best first."""

    endpoint = "/rerank"
    error_style = "tei"
    request_class = RerankRequest

    async def handle(self, service: ModelService, request: Any, items: list[Any]) -> Any:
        _rerank_only(service)
        rows, _ = await service.score(request.query, items, bool(request.truncate), request.truncate_left)
        return rerank_response(service.activate(rows, request.raw_scores), items, request.return_text)


class CohereRerankHandler(PostHandler):
    """`POST /v1/rerank` (Cohere / Jina style): `results` with `relevance_score`, best first."""

    endpoint = "/v1/rerank"
    request_class = CohereRerankRequest

    async def handle(self, service: ModelService, request: Any, items: list[Any]) -> Any:
        _rerank_only(service)
        rows, tokens = await service.score(request.query, items, truncate=True)
        scores = service.activate(rows, raw=False)
        return cohere_rerank_response(
            service.name, scores, items, request.top_n, request.return_documents, tokens
        )


def make_app(state: ServerState) -> tornado.web.Application:
    """The tornado application with every route, plain and under `/<model>/`."""
    kw = {"state": state}
    model = r"/(?P<model>[A-Za-z0-9][A-Za-z0-9._-]*)"
    routes: list[Any] = [
        (r"/health", HealthHandler, kw),
        (r"/metrics", MetricsHandler, kw),
        (r"/info", InfoHandler, kw),
        (r"/v1/models", ModelsHandler, kw),
        (r"/v1/embeddings", OpenAIEmbeddingsHandler, kw),
        (r"/embed", EmbedHandler, kw),
        (r"/embed_sparse", EmbedSparseHandler, kw),
        (r"/rerank", RerankHandler, kw),
        (r"/v1/rerank", CohereRerankHandler, kw),
        (model + r"/health", HealthHandler, kw),
        (model + r"/info", InfoHandler, kw),
        (model + r"/v1/models", ModelsHandler, kw),
        (model + r"/v1/embeddings", OpenAIEmbeddingsHandler, kw),
        (model + r"/embed", EmbedHandler, kw),
        (model + r"/embed_sparse", EmbedSparseHandler, kw),
        (model + r"/rerank", RerankHandler, kw),
        (model + r"/v1/rerank", CohereRerankHandler, kw),
    ]
    return tornado.web.Application(
        routes, default_handler_class=NotFoundHandler, default_handler_args=kw, compress_response=False
    )
