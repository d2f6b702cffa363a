"""Bodies of the REST API, declared once as pydantic models.

Request models are strict: a field of the wrong JSON type (a number for a name, `false` for
a project) is a 422 that names the field, never a value stored as it came. Deployment
configurations have their own models in `config/`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config import describe_errors, field_errors
from ..config.sharing import HubName
from .jsonbody import BodyError

Model = TypeVar("Model", bound=BaseModel)
Text = Annotated[str, Field(min_length=1, max_length=200)]


class RequestBody(BaseModel):
    """Base of request bodies: exact JSON types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


class FieldError(BaseModel):
    """One problem with one field of a request."""

    field: str = Field(description="dotted path, e.g. models.0.pooling; (root) for the body itself")
    message: str
    allowed: list[Any] | None = None


class Error(BaseModel):
    """Every error answer of the API (4xx and 5xx)."""

    error: str = Field(description="one-line message")
    errors: list[FieldError] | None = Field(None, description="the fields at fault, when there are any")


# Requests -------------------------------------------------------------------------------


class CloneRequest(RequestBody):
    """POST /deployments/{ref}/clone."""

    name: Text = Field(description="name of the new deployment")
    overrides: dict[str, Any] = Field(default_factory=dict, description="configuration fields to change")
    launch: bool = Field(True, description="start it at once (false: stored stopped)")
    include_secrets: bool = Field(
        True, description="copy the source's API key and Hugging Face token (false: the clone has neither)"
    )


class AdapterRequest(RequestBody):
    """POST /deployments/{ref}/adapters."""

    name: Text = Field(description="model name the adapter is served under")
    path: Annotated[str, Field(min_length=1, max_length=4096)] = Field(description="adapter folder or hub repo")


Lifetime = Annotated[float, Field(gt=0, le=100 * 365 * 86400, allow_inf_nan=False)]
TokenRole = Literal["inference", "read"]
TokenPriority = Literal["interactive", "batch"]
PRIORITY_HELP = ("the class of the key's requests in a deployment's queue: interactive ones are served before batch "
                 "ones")
Limit = Annotated[int, Field(ge=1, le=10**12)]


class KeyQuotas(RequestBody):
    """A key's quotas; each one left out (or null) is no limit. Past one: 429 with Retry-After."""

    requests_per_minute: Limit | None = Field(None, description="requests in any 60 s")
    tokens_per_minute: Limit | None = Field(None, description="prompt + completion tokens in any 60 s")
    max_in_flight: Limit | None = Field(None, description="requests of this key in flight at once")
    daily_tokens: Limit | None = Field(None, description="prompt + completion tokens per UTC day")


class TokenRequest(RequestBody):
    """POST /tokens: a token scoped to exactly one deployment or one project."""

    deployment: Text | None = Field(None, description="deployment id or name")
    project: Text | None = Field(None, description="project name")
    name: Text | None = Field(None, description="a label for the token")
    expires_in_s: Lifetime | None = Field(None, description="lifetime in seconds (empty: no expiry)")
    role: TokenRole = Field("inference", description="inference: the serving API; read: health, models and metrics only")
    models: Annotated[list[Text], Field(min_length=1, max_length=100)] | None = Field(
        None, description="the only models the key may call (empty: every model of its scope)"
    )
    quotas: KeyQuotas | None = Field(None, description="limits of this key (empty: none)")
    priority: TokenPriority = Field("interactive", description=PRIORITY_HELP)

    @model_validator(mode="after")
    def _one_scope(self) -> TokenRequest:
        if (self.deployment is None) == (self.project is None):
            raise ValueError("a token is scoped to exactly one of: deployment, project")
        return self


class TokenUpdate(RequestBody):
    """PATCH /tokens/{id}: change a key's label, expiry, quotas or priority; effective for its next request."""

    name: Text | None = Field(None, description="a new label")
    expires_in_s: Lifetime | None = Field(None, description="a new lifetime, from now, in seconds")
    no_expiry: bool = Field(False, description="true: the key no longer expires")
    quotas: KeyQuotas | None = Field(None, description="new quotas, replacing the old ones ({}: no limits)")
    priority: TokenPriority | None = Field(None, description=PRIORITY_HELP)

    @model_validator(mode="after")
    def _one_expiry(self) -> TokenUpdate:
        if self.no_expiry and self.expires_in_s is not None:
            raise ValueError("give expires_in_s or no_expiry, not both")
        return self


# Responses ------------------------------------------------------------------------------


class ResponseBody(BaseModel):
    """Base of response bodies (what the server writes; extra keys would be a bug)."""

    model_config = ConfigDict(extra="forbid")


class EngineAvailability(ResponseBody):
    """Which program a kind would run here, and how to install what is missing."""

    available: bool
    program: str | None = None
    python: str | None = Field(None, description="the interpreter that runs it, where that is a setting")
    notes: list[str] = Field(default_factory=list)


class RecoveredStore(ResponseBody):
    """An unreadable store file that was renamed aside; the server started with an empty store."""

    moved_to: str = Field(description="file name, in the state folder, the unreadable store now has")
    reason: str
    at: float


class SkippedStoredRow(ResponseBody):
    """A stored row that could not be read and is left out."""

    table: str
    id: str | None
    reason: str


class StoreReport(ResponseBody):
    """What the deployment store could not read when the server started."""

    recovered: RecoveredStore | None = None
    skipped: list[SkippedStoredRow] = Field(default_factory=list)


class StatusResponse(ResponseBody):
    """GET /status."""

    version: str
    kinds: list[str]
    engines: dict[str, EngineAvailability]
    gpu: bool
    deployments: dict[str, int] = Field(description="how many deployments are in each status")
    store: StoreReport


class QuotaValues(ResponseBody):
    """A key's quotas as stored (null: no limit)."""

    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_in_flight: int | None
    daily_tokens: int | None


class Token(ResponseBody):
    """A token's public description (never the token itself)."""

    id: str
    name: str | None
    prefix: str = Field(description="the token's first characters, to recognise it")
    deployment_id: str | None
    project: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    role: TokenRole
    models: list[str] | None = Field(description="the only models the key may call (null: every model of its scope)")
    last_used_at: float | None = Field(description="when a request last presented the key (written within seconds)")
    quotas: QuotaValues | None = Field(description="the key's limits (null: none)")
    priority: TokenPriority = Field(description=PRIORITY_HELP)
    hub_user: str | None = Field(None, description="the Hub user who got the key on the share page (null: the owner "
                                 "made it)")
    hub_groups: list[str] | None = Field(None, description="that user's Hub groups, as last reported")


class TokenCreated(Token):
    """POST /tokens: the description, and the token itself (shown this once)."""

    token: str


class TokenList(ResponseBody):
    """GET /tokens."""

    tokens: list[Token]


class FitPart(ResponseBody):
    """One component of a memory estimate."""

    what: str
    bytes: int
    where: Literal["gpu", "host"]


class FitEstimate(ResponseBody):
    """The memory a deployment will need at its peak, from its model's files (`known`: they could be read)."""

    known: bool
    gpu_bytes: int
    host_bytes: int
    parts: list[FitPart]
    notes: list[str]


class FitFree(ResponseBody):
    """Memory free now, and what deployments still loading will take of it."""

    host_bytes: int
    gpu_bytes: list[int] = Field(description="free bytes of each GPU the deployment may use")
    reserved_host_bytes: int
    reserved_gpu_bytes: int


class FitReport(ResponseBody):
    """The fit check: the estimate against free memory (`fits` null when there is no estimate)."""

    fits: bool | None
    message: str
    estimate: FitEstimate
    free: FitFree


class ValidateResponse(ResponseBody):
    """POST /validate."""

    ok: bool
    config: dict[str, Any] = Field(description="the normalised configuration, secrets left out")
    notices: list[str]
    fit: FitReport | None = Field(None, description="whether it fits in memory now (the views' /validate)")


class DryRunPlan(ResponseBody):
    """POST /deployments?dry_run=1: what would run, secrets masked; nothing is started."""

    argv: list[str]
    env: dict[str, str]
    notes: list[str]
    models: list[str]
    fit: FitReport | None = None


StatusName = Literal["stopped", "loading", "active", "idle", "unhealthy", "sleeping", "waking", "stopping", "failed"]
ActionName = Literal["stop", "relaunch", "clone", "export", "delete", "logs"]


class TestRequest(ResponseBody):
    """The request that tries a deployment's model."""

    url: str
    body: dict[str, Any]
    needs_key: bool


class ServedModel(ResponseBody):
    """One model a deployment serves, and its state in the memory manager."""

    name: str
    state: Literal["on_device", "offloaded", "on_disk", "loading"] | None
    swaps: int = 0
    swap_seconds: float | None = None
    endpoint: str = Field(description="this model's own API base (the model segment in the URL)")
    task: Literal["chat", "embed", "rerank"] = Field(description="what the model does, as its engine says")
    test_command: str = Field(description="a curl command for this model (the key read from $MODELDEPLOY_API_KEY)")


class PhaseTime(ResponseBody):
    """One loading phase that ended, and how long it took."""

    phase: str
    started_at: float
    elapsed_s: float
    bytes: int | None = Field(None, description="downloading: the bytes fetched (or found in the cache)")


class LoadProgress(ResponseBody):
    """While loading: the phase (preparing, downloading, building engine, starting engine, loading weights,
    warming up, ready), its percentage when known, download bytes and rate, the phases passed."""

    phase: str
    percent: float | None
    phase_elapsed_s: float
    elapsed_s: float
    bytes_done: int | None
    bytes_total: int | None
    rate_bytes_per_s: float | None
    phases: list[PhaseTime]


class StatusChange(ResponseBody):
    """One entry of a deployment's status history."""

    status: StatusName
    at: float
    reason: str | None = None
    phases: list[PhaseTime] | None = Field(None, description="on the change to active: each loading phase's time")


class EngineFacts(ResponseBody):
    """The engine program a deployment runs, and the engine's notes on this launch."""

    program: str | None
    notes: list[str]


class ReplicaRecord(ResponseBody):
    """One engine serving a deployment: on this host (`local`), or a Ray replica on the node Ray chose."""

    id: str
    state: Literal["starting", "serving", "down", "stopping"]
    node: str | None = Field(description="the node's id (Ray) or this host's name")
    node_ip: str | None
    address: str | None = Field(description="where its engine listens")
    pid: int | None
    in_flight: int = Field(description="requests the gateway has on it now")
    requests: int = Field(description="requests the gateway sent it")
    started_at: float
    serving_since: float | None
    restarts: int = Field(description="times Ray restarted it after a failure")
    reason: str | None = Field(description="why it is starting or down, when known")
    cpu_percent: float | None = None
    memory_bytes: float | None = None


class ReplicaEventRecord(ResponseBody):
    """Something that happened to one of a Ray deployment's replicas: which node, when, why."""

    at: float = Field(description="when (Unix seconds)")
    replica: str
    event: Literal["lost", "node_gone", "restarted", "ended"] = Field(
        description="lost: out of rotation, its actor or engine failed; node_gone: Ray reports its node dead; "
                    "restarted: Ray brought it back (on `node`); ended: it ended for good and is replaced")
    node: str | None = Field(description="the node's id: the one it was lost on, or restarted on")
    node_ip: str | None
    reason: str | None


class QueueState(ResponseBody):
    """A deployment's waiting line (see `queue_size`)."""

    depth: int
    served: int
    rejected: int
    wait_s_total: float
    mean_wait_s: float


class DeploymentRecord(ResponseBody):
    """A deployment as every view shows it: derived once, here; never a secret."""

    id: str
    name: str
    kind: str
    project: str
    model: str | None
    models: list[ServedModel]
    status: StatusName
    live: bool = Field(description="holds its name and route as a running deployment (not stopped or failed)")
    serving: bool = Field(description="answers requests now or after a wake-up")
    actions: list[ActionName] = Field(description="what a user may do with it now")
    status_reason: str | None
    status_summary: str | None = Field(description="the reason in one line")
    status_details: list[str] = Field(description="the raw engine lines behind the summary")
    status_history: list[StatusChange]
    progress: LoadProgress | None = Field(None, description="while loading: its phase and numbers")
    created_at: float
    started_at: float | None
    stopped_at: float | None
    last_activity_at: float | None
    idle_for_s: float
    requests_in_flight: int
    queue: QueueState = Field(description="its waiting line: requests waiting for a slot now, and since the server "
                              "started, those served from it, those refused for it (full, or waited too long) "
                              "and their waits")
    requests_total: int
    exit_code: int | None
    pid: int | None
    route: str
    endpoint_url: str
    api_base: str
    test_request: TestRequest
    test_command: str
    public: bool
    has_api_key: bool
    engine: EngineFacts
    notices: list[str]
    placement: Literal["local", "ray"] = Field(description="where it runs")
    replicas: list[ReplicaRecord] = Field(description="the engines serving it, with their nodes")
    replica_events: list[ReplicaEventRecord] = Field(
        description="this run's replicas lost, restarted and ended, with their nodes (the latest 100)")
    config: dict[str, Any] = Field(description="the exported configuration, secrets left out")


class RequestTotals(ResponseBody):
    """Requests and tokens counted by the gateway since the server started."""

    requests: int
    by_status: dict[str, int] = Field(description="requests per HTTP status")
    prompt_tokens: int
    completion_tokens: int


class DeploymentMetrics(ResponseBody):
    """GET /deployments/{ref}/metrics: chart series since a time, and totals."""

    t: list[float] = Field(description="sample times (Unix seconds)")
    series: dict[str, list[float | None]] = Field(description="one value per sample time, per series name")
    totals: RequestTotals
    models: dict[str, RequestTotals] = Field(description="totals per served model (`other`: unknown names)")
    in_flight: int
    engine: dict[str, float] = Field(description="the engine's own charted metrics, latest values")
    model_states: dict[str, dict[str, Any]] = Field(description="per model: state, swaps, swap time")
    interval_s: float


class KeyUsageRow(ResponseBody):
    """One key's use of one model of one deployment in one minute."""

    minute: int = Field(description="start of the minute (Unix seconds)")
    key_id: str = Field(description="a generated key's id, api-key (the deployment's fixed key) or none (no key)")
    key_name: str | None = Field(description="the key's label, where it has one")
    hub_user: str | None = Field(None, description="the Hub user holding the key, for a key got on the share page")
    deployment_id: str
    deployment: str | None = Field(description="the deployment's name (null once it was deleted)")
    model: str = Field(description="a served model's name, other (a name it does not serve) or - (none chosen)")
    requests: int
    errors: int = Field(description="requests answered with a 4xx or 5xx status")
    prompt_tokens: int
    completion_tokens: int


class KeyUsageResponse(ResponseBody):
    """GET /usage: exact per-key usage, per minute, oldest first."""

    rows: list[KeyUsageRow]


class RequestLogEntry(ResponseBody):
    """One request as the request log keeps it."""

    id: int
    at: float = Field(description="when it ended (Unix seconds)")
    key_id: str
    key_name: str | None
    hub_user: str | None = Field(None, description="the Hub user holding the key, for a key got on the share page")
    deployment_id: str
    deployment: str | None
    model: str | None
    method: str
    route: str = Field(description="the engine path it went to, e.g. /v1/chat/completions")
    status: int
    latency_ms: float
    first_token_ms: float | None = Field(description="time to the first streamed chunk (streams only)")
    prompt_tokens: int | None
    completion_tokens: int | None
    streamed: bool
    door: str = Field("jupyter", description="how it came: `jupyter` (the endpoint URL), or the gateway worker's own "
                      "`socket` (<state_dir>/gateway.sock) or `port` (gateway_port)")
    replica: str | None = Field(None, description="the replica it was sent to (none: it reached no engine)")
    has_bodies: bool = Field(description="whether its bodies were captured (the deployment's capture_bodies)")
    request_body: str | None = None
    response_body: str | None = None


class RequestLogResponse(ResponseBody):
    """GET /requests: the newest requests first."""

    requests: list[RequestLogEntry]


class JupyterAIModel(ResponseBody):
    """One jupyter-ai model written for a deployment (its key is in the file, not here)."""

    id: str = Field(description="3.x: the custom model's id; 2.x: the global model id")
    name: str
    description: str
    model_id: str = Field(description="3.x: the LiteLLM id, openai/<model>; 2.x: the global model id, "
                          "openai-chat-custom:<model> (chat) or openai-custom:<model> (embeddings)")
    params: dict[str, str] = Field(description="3.x: api_base; 2.x: openai_api_base, as in the provider's fields "
                                   "(the key, made for jupyter-ai, is left out)")


class JupyterAIRegistration(ResponseBody):
    """POST /deployments/{ref}/jupyter-ai (the models written), GET (the models there now)."""

    version: int = Field(description="the jupyter-ai major version written for: 2 or 3")
    config: str = Field(description="jupyter-ai's configuration file written (in the Jupyter data folder)")
    registered: bool = Field(description="the deployment has models in that file")
    models: list[JupyterAIModel]
    selected: list[str] = Field(default_factory=list, description="2.x: the global model ids made the selected "
                                "chat / embedding model (only where none was selected)")


class GpuSeries(ResponseBody):
    """One GPU's series."""

    index: int
    name: str
    t: list[float]
    series: dict[str, list[float | None]]


class HostMetrics(ResponseBody):
    """GET /host/metrics: the host's series, and each GPU's (none without a GPU)."""

    t: list[float]
    series: dict[str, list[float | None]]
    gpus: list[GpuSeries]
    gpu_available: bool
    interval_s: float


#: The bodies that docs/openapi.yaml takes from these models (scripts/gen_openapi.py).
# JupyterHub sharing ----------------------------------------------------------------------



class HubPerson(RequestBody):
    """A Hub user as the Hub's share service reports them: their name and groups."""

    user: HubName
    groups: Annotated[list[HubName], Field(max_length=4096)] = Field(default_factory=list)


class ShareKeyRequest(HubPerson):
    """POST /hub-share/keys: a personal key to one deployment for a Hub user (the share service only)."""

    deployment: Text = Field(description="deployment id or name")


class HubMembers(RequestBody):
    """POST /hub-share/members: people's groups as the Hub has them now (null: no such user any more)."""

    members: dict[HubName, Annotated[list[HubName], Field(max_length=4096)] | None] = Field(max_length=100_000)


class ShareState(ResponseBody):
    """GET/PUT /deployments/{ref}/share: who may get a key, where, and who holds one."""

    share_with: dict[str, Any] = Field(description="the deployment's share_with section")
    hub: bool = Field(description="whether this server runs under a JupyterHub (outside one, sharing is unused)")
    share_url: str | None = Field(description="the deployment's share page on the Hub (null outside a Hub)")
    holders: list[Token] = Field(description="keys people got through the share page, valid ones")
    revoked: list[Token] = Field(default_factory=list, description="keys this change revoked")


class ShareOffer(ResponseBody):
    """A deployment shared with a Hub user, as their share page shows it."""

    deployment: str = Field(description="the deployment's id")
    name: str
    status: str
    api_path: str = Field(description="the OpenAI base URL's path on the Hub's address")
    models: list[str]
    role: TokenRole
    priority: TokenPriority
    quotas: QuotaValues
    holds_key: bool = Field(description="whether they hold a valid key of it already")


class ShareOffers(ResponseBody):
    """POST /hub-share/offers: what this server's owner shares with a Hub user."""

    owner: str
    offers: list[ShareOffer]


class SharedKey(ResponseBody):
    """POST /hub-share/keys: the key (shown this once) and what it opens."""

    token: str
    key: Token
    offer: ShareOffer


class ShareHolders(ResponseBody):
    """GET /hub-share/holders: the Hub users holding a valid shared key here."""

    holders: list[str]


class ShareCheck(ResponseBody):
    """POST /hub-share/members: keys revoked now, and who still holds one."""

    revoked: list[Token]
    holders: list[str]


REQUEST_MODELS: tuple[type[BaseModel], ...] = (CloneRequest, AdapterRequest, TokenRequest, TokenUpdate, HubPerson,
                                                   ShareKeyRequest, HubMembers)
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Error, StatusResponse, Token, TokenCreated, TokenList, ValidateResponse, DryRunPlan, DeploymentRecord,
    DeploymentMetrics, HostMetrics, KeyUsageResponse, RequestLogEntry, RequestLogResponse, JupyterAIRegistration,
    ShareState, ShareOffers, SharedKey, ShareHolders, ShareCheck,
)


def parse_body(model: type[Model], data: Any) -> Model:
    """Validate parsed JSON against a request model; BodyError (422) names every wrong field."""
    if not isinstance(data, dict):
        message = "the request body must be a JSON object"
        raise BodyError(422, message, [{"field": "(root)", "message": message}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        summary = describe_errors(errors)
        raise BodyError(422, f"invalid request: {summary}", errors) from None

