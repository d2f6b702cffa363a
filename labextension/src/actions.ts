import { ILabShell } from '@jupyterlab/application';
import {
  Clipboard,
  Dialog,
  IThemeManager,
  MainAreaWidget,
  Notification,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import { IFrame } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { ApiError, IDeployment, IJupyterAIRegistration, IToken, ModelDeployClient } from './api';
import { DashboardWidget } from './dashboard';
import { LaunchFormWidget } from './form';
import { LogWidget } from './logs';
import { DeploymentsModel } from './model';
import { IPanelActions } from './panel';
import { formatQuotas } from './quotas';
import { showShareDialog } from './share';
import { tokenScope } from './tokenlist';
import {
  IQuotaForm,
  ITokenForm,
  parseQuotas,
  QuotasBody,
  quotaForm,
  showSecretOnce,
  tokenRequest,
  TokenRequestBody
} from './tokens';

const DEFAULT_KINDS = ['llamacpp', 'llm', 'embedding'];

/** The server's refusal of the input (4xx): its message and the fields it named; null for other errors. */
function refusal(err: unknown): { message: string; fields: string[] } | null {
  return err instanceof ApiError && err.status >= 400 && err.status < 500
    ? { message: err.message, fields: err.errors.map(e => e.field) }
    : null;
}

/** A registration's models: name and the id jupyter-ai knows them by. */
function jupyterAIBody(registration: IJupyterAIRegistration, note: string): Widget {
  const body = document.createElement('div');
  body.className = 'jp-ModelDeploy-jupyterAI';
  const p = document.createElement('p');
  p.textContent = note;
  const list = document.createElement('ul');
  for (const m of registration.models) {
    const item = document.createElement('li');
    const id = document.createElement('code');
    id.textContent = m.model_id;
    item.append(`${m.name}: `, id);
    item.title = m.id;
    list.appendChild(item);
  }
  body.append(p, list);
  return new Widget({ node: body });
}

/** Everything the panel and the commands do, against the REST API and the shell. */
export class Actions implements IPanelActions {
  constructor(
    private shell: ILabShell,
    private model: DeploymentsModel,
    private panelId: string,
    private themes: IThemeManager | null = null
  ) {
    this.client = model.client;
  }

  /** Voilà's theme for Lab's current one, so a dashboard tab looks like the rest of Lab. */
  private voilaTheme(): 'light' | 'dark' {
    const theme = this.themes?.theme;
    return theme && this.themes && !this.themes.isLight(theme) ? 'dark' : 'light';
  }

  readonly client: ModelDeployClient;

  /** Kinds whose engine is available first, so the form opens on one that works here. */
  private async kinds(): Promise<string[]> {
    this.kindsPromise ??= this.client
      .status()
      .then(status => {
        const kinds = status.kinds?.length ? status.kinds : DEFAULT_KINDS;
        const available = (k: string) => status.engines?.[k]?.available !== false;
        return [...kinds.filter(available), ...kinds.filter(k => !available(k))];
      })
      .catch(() => {
        this.kindsPromise = null;
        return DEFAULT_KINDS;
      });
    return this.kindsPromise;
  }

  async openForm(
    initial?: Record<string, unknown>,
    note?: string,
    submit?: (config: Record<string, unknown>) => Promise<IDeployment>
  ): Promise<void> {
    const kinds = await this.kinds();
    if (!initial) {
      // The server knows what can run here and what was launched last.
      const defaults = await this.client.launchDefaults().catch(() => null);
      if (defaults && kinds.includes(defaults.kind)) {
        initial = { kind: defaults.kind, ...defaults.values };
      }
    }
    const content = new LaunchFormWidget({
      client: this.client,
      kinds,
      initial,
      note,
      submit,
      onLaunched: record => {
        widget.dispose();
        Notification.success(`Launching ${record.name}`, { autoClose: 3000 });
        this.shell.activateById(this.panelId);
        this.model.upsert(record);
      }
    });
    const widget = new MainAreaWidget({ content });
    widget.id = `jupyter-modeldeploy-launch-${++this.formCount}`;
    widget.title.closable = true;
    content.title.changed.connect(() => (widget.title.label = content.title.label));
    widget.title.label = content.title.label;
    this.shell.add(widget, 'main');
    this.shell.activateById(widget.id);
  }

  launchNew(): void {
    void this.openForm();
  }

  async stop(d: IDeployment): Promise<void> {
    await this.run(`stop ${d.name}`, () => this.client.action(d.id, 'stop'));
  }

  async relaunch(d: IDeployment): Promise<void> {
    await this.run(`relaunch ${d.name}`, () => this.client.action(d.id, 'relaunch'));
  }

  async remove(d: IDeployment): Promise<void> {
    const answer = await showDialog({
      title: 'Remove deployment',
      body: `Remove ${d.name} from the list? Its configuration is forgotten (export it first to keep it).`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Remove' })]
    });
    if (answer.button.accept) {
      await this.run(`remove ${d.name}`, () => this.client.remove(d.id));
    }
  }

  async clone(d: IDeployment): Promise<void> {
    try {
      const config = await this.client.exportConfig(d.id);
      const secrets = d.has_api_key
        ? ' Its API key and Hugging Face token are copied on the server unless you enter new ones.'
        : '';
      // One clone operation, the server's, as from the CLI and %deploy: the secrets never reach this page.
      await this.openForm({ ...config, name: `${d.name}-copy`, route: '' }, `Clone of ${d.name}.${secrets}`, c =>
        this.client.clone(d.id, String(c.name), c, true)
      );
    } catch (err) {
      void showErrorMessage(`Cannot clone ${d.name}`, err as Error);
    }
  }

  async exportConfig(d: IDeployment): Promise<void> {
    try {
      const config = await this.client.exportConfig(d.id);
      const blob = new Blob([JSON.stringify(config, null, 2) + '\n'], { type: 'application/json' });
      const url = URL.createObjectURL(blob);
      const link = document.createElement('a');
      link.href = url;
      link.download = `${d.name}.json`;
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      void showErrorMessage(`Cannot export ${d.name}`, err as Error);
    }
  }

  copyEndpoint(d: IDeployment): void {
    Clipboard.copyToSystem(d.api_base);
    Notification.info(`Copied ${d.api_base}`, { autoClose: 3000 });
  }

  /**
   * Copy the server's test command. With a key in hand (the deployment's own) it is in the
   * command; otherwise offer to create one here, so the pasted command works at once.
   */
  async copyTestCommand(d: IDeployment): Promise<void> {
    try {
      let test = await this.client.testCommand(d.id);
      if (test.key_source === 'missing') {
        const answer = await showDialog({
          title: `Test command for ${d.name}`,
          body: `This endpoint needs an API key and none is in hand. Generate one now and copy a command that carries it, or copy the command as is and first run: ${test.export}`,
          buttons: [
            Dialog.cancelButton(),
            Dialog.okButton({ label: 'Copy as is', displayType: 'default', actions: ['as-is'] }),
            Dialog.okButton({ label: 'Generate key and copy' })
          ]
        });
        if (!answer.button.accept) {
          return;
        }
        if (!answer.button.actions.includes('as-is')) {
          const token = await this.client.createToken({ deployment: d.id, name: `${d.name} (test command)` });
          void this.model.refreshTokens();
          test = await this.client.testCommand(d.id, token.token);
        }
      }
      Clipboard.copyToSystem(test.command);
      const how =
        test.key_source === 'missing'
          ? `the key is read from $MODELDEPLOY_API_KEY: ${test.export}`
          : test.key_source === 'public'
            ? 'no key needed'
            : 'it carries the key and works as pasted';
      Notification.info(`Copied the test command (${how})`, { autoClose: 5000 });
    } catch (err) {
      void showErrorMessage(`Cannot copy the test command of ${d.name}`, err as Error);
    }
  }

  async copyApiKey(d: IDeployment): Promise<void> {
    try {
      const token = await this.client.createToken({ deployment: d.id, name: `${d.name} (panel)` });
      void this.model.refreshTokens();
      await showSecretOnce(`API key for ${d.name}`, token.token, `deployment ${d.name}`);
    } catch (err) {
      void showErrorMessage(`Cannot create a key for ${d.name}`, err as Error);
    }
  }

  openLogs(d: IDeployment): void {
    const id = `jupyter-modeldeploy-log-${d.id}`;
    this.openOnce(id, () => {
      const content = new LogWidget(this.client, d);
      return new MainAreaWidget({ content });
    });
  }

  async openDashboard(d: IDeployment): Promise<void> {
    const id = `jupyter-modeldeploy-dashboard-${d.id}`;
    if (this.activateExisting(id)) {
      return;
    }
    // The server says where it serves the packaged dashboard (a wheel install and a checkout alike).
    const info = await this.client.dashboard().catch(() => null);
    const voilaUrl = info?.voila ? info.url : null;
    this.openOnce(id, () => {
      let content: Widget;
      if (voilaUrl) {
        const frame = new IFrame({
          sandbox: ['allow-scripts', 'allow-same-origin', 'allow-forms', 'allow-downloads', 'allow-popups']
        });
        const url = () => `${voilaUrl}?deployment=${encodeURIComponent(d.id)}&theme=${this.voilaTheme()}`;
        frame.url = url();
        // Follow Lab's light/dark theme: Voilà picks its theme when the page loads.
        const follow = () => {
          if (frame.url !== url()) {
            frame.url = url();
          }
        };
        this.themes?.themeChanged.connect(follow);
        frame.disposed.connect(() => this.themes?.themeChanged.disconnect(follow));
        frame.addClass('jp-ModelDeploy-voila');
        frame.title.label = `Dashboard: ${d.name}`;
        content = frame;
      } else {
        content = new DashboardWidget(this.client, d);
      }
      return new MainAreaWidget({ content });
    });
  }

  /**
   * The "Generate token" dialog, shown again with the values typed and the reason while the
   * input is refused (here or by the server's 4xx); the new value is then shown once.
   */
  async createToken(): Promise<void> {
    let form: ITokenForm | null = null;
    let message: string | null = null;
    let faults: string[] = [];
    for (;;) {
      const answer: Dialog.IResult<ITokenForm> = await showDialog<ITokenForm>({
        title: 'Generate an API token',
        body: new TokenRequestBody(this.model.deployments, form, message, faults),
        buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Generate' })]
      });
      if (!answer.button.accept || !answer.value) {
        return;
      }
      const typed: ITokenForm = answer.value;
      form = typed;
      const request = tokenRequest(typed);
      if (typeof request === 'string') {
        [message, faults] = [request, []];
        continue;
      }
      let token: IToken & { token: string };
      try {
        token = await this.client.createToken(request);
      } catch (err) {
        const refused = refusal(err);
        if (refused) {
          ({ message, fields: faults } = refused);
          continue;
        }
        void showErrorMessage('Cannot generate a token', err as Error);
        return;
      }
      void this.model.refreshTokens();
      const names = new Map(this.model.deployments.map(d => [d.id, d.name]));
      await showSecretOnce('New API token', token.token, `${token.role} on ${tokenScope(token, names)}`);
      return;
    }
  }

  /** Change a token's quotas (the server's PATCH); the form comes back with the reason while refused. */
  async editQuotas(t: IToken): Promise<void> {
    let values = quotaForm(t.quotas);
    let message: string | null = null;
    let faults: string[] = [];
    for (;;) {
      const answer: Dialog.IResult<IQuotaForm> = await showDialog<IQuotaForm>({
        title: `Quotas of ${t.name || t.prefix}`,
        body: new QuotasBody(t, values, message, faults),
        buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Save' })]
      });
      if (!answer.button.accept || !answer.value) {
        return;
      }
      values = answer.value;
      const quotas = parseQuotas(values);
      if (typeof quotas === 'string') {
        [message, faults] = [quotas, []];
        continue;
      }
      try {
        await this.client.updateQuotas(t.id, quotas);
      } catch (err) {
        const refused = refusal(err);
        if (refused) {
          ({ message, fields: faults } = refused);
          continue;
        }
        void showErrorMessage('Cannot change the quotas', err as Error);
        return;
      }
      Notification.success(`Quotas of ${t.name || t.prefix}: ${formatQuotas(quotas)}`, { autoClose: 3000 });
      await this.model.refreshTokens();
      return;
    }
  }

  /** The Share dialog: who on the JupyterHub may get a key of their own, the share page, who holds one. */
  async share(d: IDeployment): Promise<void> {
    try {
      const state = await this.client.share(d.id);
      await showShareDialog(this.client, d, state, () => void this.model.refreshTokens());
    } catch (err) {
      void showErrorMessage(`Cannot read how ${d.name} is shared`, err as Error);
    }
  }

  /**
   * Register the deployment's chat models with jupyter-ai and show their ids; when it already
   * is, show its models there and offer to register again or unregister.
   */
  async registerJupyterAI(d: IDeployment): Promise<void> {
    let what = `read the jupyter-ai registration of ${d.name}`;
    try {
      const now = await this.client.jupyterAI(d.id);
      if (now.registered) {
        const answer = await showDialog({
          title: `${d.name} in jupyter-ai`,
          body: jupyterAIBody(now, `${d.name} is registered with jupyter-ai (in its ${now.config}) as:`),
          buttons: [
            Dialog.cancelButton({ label: 'Close' }),
            Dialog.okButton({ label: 'Register again', displayType: 'default', actions: ['register'] }),
            Dialog.warnButton({ label: 'Unregister', actions: ['unregister'] })
          ]
        });
        if (answer.button.actions.includes('unregister')) {
          what = `unregister ${d.name} from jupyter-ai`;
          const { removed } = await this.client.unregisterJupyterAI(d.id);
          void this.model.refreshTokens();
          Notification.success(`${d.name}: ${removed} jupyter-ai model(s) removed, their key revoked`, {
            autoClose: 5000
          });
          return;
        }
        if (!answer.button.actions.includes('register')) {
          return;
        }
      }
      what = `register ${d.name} with jupyter-ai`;
      const made = await this.client.registerJupyterAI(d.id);
      void this.model.refreshTokens();
      await showDialog({
        title: `${d.name} registered with jupyter-ai`,
        body: jupyterAIBody(
          made,
          `Written to jupyter-ai's ${made.config}, with a key of their own. Pick them in jupyter-ai's model picker:`
        ),
        buttons: [Dialog.okButton({ label: 'Done' })]
      });
    } catch (err) {
      void showErrorMessage(`Cannot ${what}`, err as Error);
    }
  }

  async revokeToken(t: IToken): Promise<void> {
    const answer = await showDialog({
      title: 'Revoke token',
      body: `Revoke ${t.name || t.prefix || t.id}? Clients using it get 401 at once.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Revoke' })]
    });
    if (answer.button.accept) {
      try {
        await this.client.revokeToken(t.id);
      } catch (err) {
        void showErrorMessage('Cannot revoke the token', err as Error);
      }
      await this.model.refreshTokens();
    }
  }

  private async run(what: string, call: () => Promise<unknown>): Promise<void> {
    try {
      const result = await call();
      if (result && typeof result === 'object' && 'status' in result) {
        this.model.upsert(result as IDeployment);
      }
    } catch (err) {
      void showErrorMessage(`Cannot ${what}`, err as Error);
    }
    await this.model.refresh();
  }

  private activateExisting(id: string): boolean {
    const existing = this.opened.get(id);
    if (existing && !existing.isDisposed) {
      this.shell.activateById(existing.id);
      return true;
    }
    return false;
  }

  private openOnce(id: string, create: () => MainAreaWidget): void {
    if (this.activateExisting(id)) {
      return;
    }
    const widget = create();
    widget.id = id;
    widget.title.closable = true;
    widget.title.label = widget.content.title.label;
    this.opened.set(id, widget);
    widget.disposed.connect(() => this.opened.delete(id));
    this.shell.add(widget, 'main');
    this.shell.activateById(widget.id);
  }

  private kindsPromise: Promise<string[]> | null = null;
  private formCount = 0;
  private opened = new Map<string, Widget>();
}
