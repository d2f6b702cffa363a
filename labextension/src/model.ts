import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { IDeployment, IToken, ModelDeployClient } from './api';

/**
 * The deployments and tokens the panel shows, refreshed by a poll every 2 s while the
 * panel is visible (and the browser tab too); the tokens only while their section is open.
 */
export class DeploymentsModel {
  constructor(readonly client: ModelDeployClient) {
    this.poll = new Poll({
      auto: false,
      factory: () => this.fetch(),
      frequency: { interval: 2000, backoff: true, max: 30000 },
      name: 'jupyter-modeldeploy:deployments',
      standby: 'when-hidden'
    });
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  deployments: IDeployment[] = [];
  tokens: IToken[] = [];
  error: string | null = null;
  loaded = false;

  /** Poll while the panel is visible. */
  setVisible(visible: boolean): void {
    if (visible) {
      void this.poll.start();
      void this.poll.refresh();
    } else {
      void this.poll.stop();
    }
  }

  /** Show a record the server just returned, before the next poll. */
  upsert(record: IDeployment): void {
    const index = this.deployments.findIndex(d => d.id === record.id);
    this.deployments =
      index < 0 ? [...this.deployments, record] : this.deployments.map(d => (d.id === record.id ? record : d));
    this._changed.emit();
  }

  refresh(): Promise<void> {
    return this.fetch().catch(() => undefined);
  }

  /** Keep the tokens fresh (last used, expiry) with each poll while their section is open. */
  watchTokens(open: boolean): void {
    this.tokensOpen = open;
    if (open) {
      void this.refreshTokens();
    }
  }

  async refreshTokens(): Promise<void> {
    try {
      this.tokens = await this.client.tokens();
    } catch (err) {
      this.error = `Cannot list tokens: ${(err as Error).message}`;
    }
    this._changed.emit();
  }

  dispose(): void {
    this.poll.dispose();
    Signal.clearData(this);
  }

  private async fetch(): Promise<void> {
    try {
      this.deployments = await this.client.deployments();
      this.error = null;
    } catch (err) {
      this.error = (err as Error).message;
      this._changed.emit();
      // A rejected factory makes the poll back off.
      throw err;
    } finally {
      this.loaded = true;
    }
    if (this.tokensOpen) {
      await this.refreshTokens();
      return;
    }
    this._changed.emit();
  }

  private tokensOpen = false;
  private poll: Poll;
  private _changed = new Signal<this, void>(this);
}
