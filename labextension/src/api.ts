import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export type Status =
  | 'stopped'
  | 'loading'
  | 'active'
  | 'idle'
  | 'unhealthy'
  | 'sleeping'
  | 'waking'
  | 'stopping'
  | 'failed';

/** What the user may do with a deployment now, as the server says (never re-derived here). */
export type Action = 'stop' | 'relaunch' | 'clone' | 'export' | 'delete' | 'logs';

export interface IDeployment {
  id: string;
  name: string;
  kind: string;
  project: string;
  model: string | null;
  models: { name: string; state: string | null; endpoint: string; task: 'chat' | 'embed' | 'rerank'; test_command: string }[];
  status: Status;
  /** Holds its name and route as a running deployment (not stopped or failed). */
  live: boolean;
  /** Answers requests now or after a wake-up. */
  serving: boolean;
  actions: Action[];
  status_reason: string | null;
  /** The reason in one line (how the engine ended, and its most telling line). */
  status_summary?: string | null;
  /** The raw engine lines behind the summary. */
  status_details?: string[];
  created_at: number;
  started_at: number | null;
  stopped_at: number | null;
  last_activity_at: number | null;
  idle_for_s: number;
  requests_in_flight: number;
  requests_total: number;
  exit_code: number | null;
  route: string;
  endpoint_url: string;
  api_base: string;
  test_command: string;
  public?: boolean;
  has_api_key: boolean;
  notices: string[];
  /** Where it runs: this host, or a Ray cluster. */
  placement: 'local' | 'ray';
  /** The engines serving it, with their nodes. */
  replicas: IReplica[];
  config: Record<string, unknown>;
  /** While loading: the phase and its numbers (null otherwise). */
  progress?: ILoadProgress | null;
}

/** Where a launch is: downloading, building engine, starting engine, loading weights, warming up, ready. */
export interface ILoadProgress {
  phase: string;
  percent: number | null;
  phase_elapsed_s: number;
  elapsed_s: number;
  bytes_done: number | null;
  bytes_total: number | null;
  rate_bytes_per_s: number | null;
  phases: { phase: string; started_at: number; elapsed_s: number; bytes?: number | null }[];
}

/** One engine serving a deployment (on this host, or a Ray replica on the node Ray chose). */
export interface IReplica {
  id: string;
  state: 'starting' | 'serving' | 'down' | 'stopping';
  node: string | null;
  node_ip: string | null;
  address: string | null;
  in_flight: number;
  requests: number;
  started_at: number;
  restarts: number;
  reason: string | null;
}

/** The server's test command for a deployment (`POST .../test-command`). */
export interface ITestCommand {
  command: string;
  request: { url: string; body: unknown; needs_key: boolean };
  key_source: 'given' | 'fixed' | 'public' | 'missing';
  export?: string;
  note?: string;
}

/** A key's limits (null: no limit); past one the gateway answers 429. */
export interface IQuotas {
  requests_per_minute: number | null;
  tokens_per_minute: number | null;
  max_in_flight: number | null;
  daily_tokens: number | null;
}

export type TokenRole = 'inference' | 'read';
/** A key's class in a deployment's queue: interactive requests are served before batch ones. */
export type TokenPriority = 'interactive' | 'batch';

export interface IToken {
  id: string;
  name: string | null;
  prefix: string;
  deployment_id: string | null;
  project: string | null;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  /** inference: the serving API; read: health, models and metrics only. */
  role: TokenRole;
  /** The only models the key may call (null: every model of its scope). */
  models: string[] | null;
  last_used_at: number | null;
  quotas: IQuotas | null;
  priority: TokenPriority;
  /** The Hub user who got the key on the Hub's share page (null: the owner made it). */
  hub_user?: string | null;
  /** That user's Hub groups, as last reported. */
  hub_groups?: string[] | null;
}

/** `POST /tokens`: exactly one of deployment and project; quotas left out are no limit. */
export interface ITokenRequest {
  deployment?: string;
  project?: string;
  name?: string;
  role?: TokenRole;
  models?: string[];
  expires_in_s?: number;
  quotas?: Partial<IQuotas>;
  priority?: TokenPriority;
}

/**
 * A deployment's `share_with`: the JupyterHub users and groups who may get a key of their own on
 * the Hub's share page, and the role, models, priority and quotas that key carries.
 */
export interface IShareWith {
  users: string[];
  groups: string[];
  role: TokenRole;
  /** The only models a shared key may call (null: every model of the deployment). */
  models: string[] | null;
  priority: TokenPriority;
  quotas: IQuotas;
}

/** `GET`/`PUT .../share`: the settings, the share page (outside a Hub: none), who holds a key. */
export interface IShareState {
  share_with: IShareWith;
  /** Whether this Jupyter server runs under a JupyterHub. */
  hub: boolean;
  share_url: string | null;
  /** The valid keys people got on the share page. */
  holders: IToken[];
  /** The keys the change just saved revoked (whoever it no longer names). */
  revoked: IToken[];
}

/** A deployment's models in jupyter-ai's configuration (`GET`/`POST .../jupyter-ai`). */
export interface IJupyterAIRegistration {
  config: string;
  registered: boolean;
  models: { id: string; name: string; model_id: string; params: Record<string, string> }[];
}

export interface IFieldError {
  field: string;
  message: string;
  allowed?: unknown[];
}

/**
 * An error answer of the REST API: its status, message and, for a configuration that
 * does not validate, the wrong fields.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly errors: IFieldError[] = []
  ) {
    super(message);
  }
}

export type JSONSchema = Record<string, any>;

/**
 * The REST client of the server extension. Every call goes through
 * ServerConnection.makeRequest, which adds the token and the XSRF header.
 */
/** The fit check of /validate: the memory a deployment will need against what is free (`fits` null: unknown). */
export interface IFitReport {
  fits: boolean | null;
  message: string;
  estimate: {
    known: boolean;
    gpu_bytes: number;
    host_bytes: number;
    parts: { what: string; bytes: number; where: 'gpu' | 'host' }[];
    notes: string[];
  };
  free: { host_bytes: number; gpu_bytes: number[]; reserved_host_bytes: number; reserved_gpu_bytes: number };
}

export class ModelDeployClient {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  url(...parts: string[]): string {
    return URLExt.join(this.settings.baseUrl, 'api/modeldeploy', ...parts);
  }

  /** An absolute URL under the Jupyter server (Voilà, contents). */
  serverUrl(...parts: string[]): string {
    return URLExt.join(this.settings.baseUrl, ...parts);
  }

  async request<T>(path: string[], init: RequestInit = {}, query = ''): Promise<T> {
    return this.fetchJSON<T>(this.url(...path) + query, init);
  }

  async fetchJSON<T>(url: string, init: RequestInit = {}): Promise<T> {
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (err) {
      throw new ApiError(0, `the Jupyter server cannot be reached: ${String(err)}`);
    }
    const text = await response.text();
    let data: any = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const message = (data && data.error) || response.statusText || `HTTP ${response.status}`;
      throw new ApiError(response.status, message, (data && data.errors) || []);
    }
    return data as T;
  }

  private json(method: string, body: unknown): RequestInit {
    return {
      method,
      body: JSON.stringify(body),
      headers: { 'Content-Type': 'application/json' }
    };
  }

  async deployments(): Promise<IDeployment[]> {
    const data = await this.request<{ deployments: IDeployment[] }>(['deployments']);
    return data.deployments;
  }

  deployment(id: string): Promise<IDeployment> {
    return this.request<IDeployment>(['deployments', id]);
  }

  schema(kind: string): Promise<JSONSchema> {
    return this.request<JSONSchema>(['schemas', kind]);
  }

  status(): Promise<{ kinds: string[]; engines: Record<string, any>; voila?: boolean }> {
    return this.request(['status']);
  }

  /** The server's checks before a launch: the fields, whether the model can be found and loaded here, and whether it fits. */
  validate(config: Record<string, unknown>): Promise<{ ok: boolean; notices: string[]; fit?: IFitReport | null }> {
    return this.request(['validate'], this.json('POST', config));
  }

  /** The kind and values a new launch form opens on (what can run here, the last kind launched). */
  launchDefaults(): Promise<{ kind: string; values: Record<string, unknown>; why: string }> {
    return this.request(['launch-defaults']);
  }

  /** Launch a configuration; `force` starts it even when the fit check says it does not fit. */
  launch(config: Record<string, unknown>, force = false): Promise<IDeployment> {
    return this.request<IDeployment>(['deployments'], this.json('POST', config), force ? '?force=1' : '');
  }

  /** A new deployment from another's configuration, on the server (secrets copied there, never sent here). */
  clone(
    id: string,
    name: string,
    overrides: Record<string, unknown>,
    includeSecrets: boolean
  ): Promise<IDeployment> {
    return this.request<IDeployment>(
      ['deployments', id, 'clone'],
      this.json('POST', { name, overrides, include_secrets: includeSecrets })
    );
  }

  action(id: string, action: 'stop' | 'relaunch'): Promise<IDeployment> {
    return this.request<IDeployment>(['deployments', id, action], { method: 'POST' });
  }

  remove(id: string): Promise<void> {
    return this.request<void>(['deployments', id], { method: 'DELETE' });
  }

  exportConfig(id: string): Promise<Record<string, unknown>> {
    return this.request(['deployments', id, 'export']);
  }

  async logs(id: string, tail = 500): Promise<string[]> {
    const data = await this.request<{ lines: string[] }>(['deployments', id, 'logs'], {}, `?tail=${tail}`);
    return data.lines;
  }

  metrics(id: string): Promise<Record<string, unknown>> {
    return this.request(['deployments', id, 'metrics']);
  }

  /** The test command, carrying `key` (or the deployment's own key) when there is one. */
  testCommand(id: string, key?: string): Promise<ITestCommand> {
    return this.request(['deployments', id, 'test-command'], this.json('POST', key ? { key } : {}));
  }

  async tokens(): Promise<IToken[]> {
    const data = await this.request<{ tokens: IToken[] }>(['tokens']);
    return data.tokens;
  }

  createToken(body: ITokenRequest): Promise<IToken & { token: string }> {
    return this.request(['tokens'], this.json('POST', body));
  }

  /** Replace a token's quotas (`{}`: no limits); effective for its next request. */
  updateQuotas(id: string, quotas: Partial<IQuotas>): Promise<IToken> {
    return this.request(['tokens', id], this.json('PATCH', { quotas }));
  }

  revokeToken(id: string): Promise<IToken> {
    return this.request(['tokens', id], { method: 'DELETE' });
  }

  /** A deployment's share settings, share page and the keys given out there. */
  share(id: string): Promise<IShareState> {
    return this.request(['deployments', id, 'share']);
  }

  /** Replace the share settings: in force at once; the keys of whoever they no longer name are revoked. */
  updateShare(id: string, share: IShareWith): Promise<IShareState> {
    return this.request(['deployments', id, 'share'], this.json('PUT', share));
  }

  /** Whether the deployment is registered with jupyter-ai, and its models there. */
  jupyterAI(id: string): Promise<IJupyterAIRegistration> {
    return this.request(['deployments', id, 'jupyter-ai']);
  }

  /** Write the deployment's chat models into jupyter-ai's configuration, with a key made for them. */
  registerJupyterAI(id: string): Promise<IJupyterAIRegistration> {
    return this.request(['deployments', id, 'jupyter-ai'], { method: 'POST' });
  }

  /** Remove its jupyter-ai models and revoke their key. */
  unregisterJupyterAI(id: string): Promise<{ removed: number }> {
    return this.request(['deployments', id, 'jupyter-ai'], { method: 'DELETE' });
  }

  /** Where the server serves the packaged Voilà dashboard (`voila` false when it does not). */
  dashboard(): Promise<{ voila: boolean; url: string | null; notebook: string | null }> {
    return this.request(['dashboard']);
  }
}

