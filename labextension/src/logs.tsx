import React from 'react';

import { IDeployment, ModelDeployClient } from './api';
import { PollingWidget } from './polling';

/** A deployment's console log in a main-area tab, refreshed every 2 s while visible. */
export class LogWidget extends PollingWidget {
  constructor(
    private client: ModelDeployClient,
    readonly deployment: IDeployment
  ) {
    super(`jupyter-modeldeploy:log:${deployment.id}`);
    this.addClass('jp-ModelDeploy-log');
    this.title.label = `Log: ${deployment.name}`;
    this.title.closable = true;
  }

  render(): JSX.Element {
    return (
      <div className="jp-ModelDeploy-logContent">
        <div className="jp-ModelDeploy-logHeader">
          {this.deployment.name} ({this.status}) — last {this.lines.length} lines
          {this.error && <span className="jp-ModelDeploy-logError"> — {this.error}</span>}
        </div>
        <pre className="jp-ModelDeploy-logLines">{this.lines.join('\n')}</pre>
      </div>
    );
  }

  protected async fetch(): Promise<void> {
    const pre = this.node.querySelector('.jp-ModelDeploy-logLines');
    const atBottom = !pre || pre.scrollHeight - pre.scrollTop - pre.clientHeight < 20;
    try {
      const [lines, record] = await Promise.all([
        this.client.logs(this.deployment.id, 1000),
        this.client.deployment(this.deployment.id)
      ]);
      this.lines = lines;
      this.status = record.status;
      this.error = null;
    } catch (err) {
      this.error = (err as Error).message;
    }
    this.update();
    if (atBottom) {
      requestAnimationFrame(() => {
        const el = this.node.querySelector('.jp-ModelDeploy-logLines');
        if (el) {
          el.scrollTop = el.scrollHeight;
        }
      });
    }
  }

  private lines: string[] = [];
  private status = '';
  private error: string | null = null;
}
