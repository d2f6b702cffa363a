import { ReactWidget, UseSignal } from '@jupyterlab/apputils';
import {
  addIcon,
  copyIcon,
  deleteIcon,
  downloadIcon,
  duplicateIcon,
  extensionIcon,
  linkIcon,
  lockIcon,
  offlineBoltIcon,
  refreshIcon,
  runIcon,
  shareIcon,
  stopIcon,
  textEditorIcon
} from '@jupyterlab/ui-components';
import type { Message } from '@lumino/messaging';
import React from 'react';

import { IDeployment, IToken, Status } from './api';
import { ActionButton } from './button';
import { formatDuration, formatTime, shortModel } from './format';
import { DeploymentsModel } from './model';
import { LoadBar } from './progress';
import { TokensSection } from './tokenlist';

/** What the panel asks the application to do; implemented in actions.ts. */
/** Why it stopped or failed: the server's one-line summary, the raw engine lines behind a toggle. */
export function Reason(props: { d: IDeployment }): JSX.Element {
  const d = props.d;
  const details = d.status_details ?? [];
  return (
    <div className={`jp-ModelDeploy-reason jp-mod-${d.status}`} title={`${d.status} ${formatTime(d.stopped_at)}`}>
      <div className="jp-ModelDeploy-reasonSummary">{d.status_summary ?? d.status_reason}</div>
      {details.length > 0 && (
        <details className="jp-ModelDeploy-reasonDetails">
          <summary>Engine output ({details.length} lines)</summary>
          <pre>{details.join('\n')}</pre>
        </details>
      )}
    </div>
  );
}

export interface IPanelActions {
  launchNew(): void;
  stop(d: IDeployment): Promise<void>;
  relaunch(d: IDeployment): Promise<void>;
  remove(d: IDeployment): Promise<void>;
  clone(d: IDeployment): Promise<void>;
  exportConfig(d: IDeployment): Promise<void>;
  copyEndpoint(d: IDeployment): void;
  copyApiKey(d: IDeployment): Promise<void>;
  copyTestCommand(d: IDeployment): Promise<void>;
  share(d: IDeployment): Promise<void>;
  openLogs(d: IDeployment): void;
  openDashboard(d: IDeployment): Promise<void>;
  registerJupyterAI(d: IDeployment): Promise<void>;
  createToken(): Promise<void>;
  editQuotas(t: IToken): Promise<void>;
  revokeToken(t: IToken): Promise<void>;
}

const STATUS_LABEL: Record<Status, string> = {
  stopped: 'stopped',
  loading: 'loading',
  active: 'active',
  idle: 'idle',
  unhealthy: 'not answering its health checks',
  sleeping: 'asleep: memory freed, the next request wakes it',
  waking: 'waking up',
  stopping: 'stopping',
  failed: 'failed'
};

function StatusBadge(props: { status: Status }): JSX.Element {
  return (
    <span
      className={`jp-ModelDeploy-status jp-mod-${props.status}`}
      title={STATUS_LABEL[props.status] ?? props.status}
      data-status={props.status}
    >
      <span className="jp-ModelDeploy-statusDot" aria-hidden="true" />
      {STATUS_LABEL[props.status] ?? props.status}
    </span>
  );
}

/** A Ray deployment's replicas: state, node, requests in flight and sent, restarts. */
function Replicas(props: { d: IDeployment }): JSX.Element {
  const { replicas } = props.d;
  const serving = replicas.filter(r => r.state === 'serving').length;
  return (
    <details className="jp-ModelDeploy-replicas" data-replicas={replicas.length}>
      <summary>
        Ray: {serving} of {replicas.length} replica{replicas.length === 1 ? '' : 's'} serving
      </summary>
      <ul>
        {replicas.map(r => (
          <li key={r.id} className="jp-ModelDeploy-replica" data-state={r.state} title={r.reason ?? r.address ?? ''}>
            <span className="jp-ModelDeploy-replicaState">{r.state}</span>
            <span className="jp-ModelDeploy-replicaNode">{r.node_ip ?? '?'} · {(r.node ?? '').slice(0, 8)}</span>
            <span className="jp-ModelDeploy-replicaLoad">
              {r.in_flight} in flight · {r.requests} sent{r.restarts ? ` · ${r.restarts} restart(s)` : ''}
            </span>
          </li>
        ))}
      </ul>
    </details>
  );
}

function DeploymentItem(props: { d: IDeployment; actions: IPanelActions }): JSX.Element {
  const { d, actions } = props;
  const serving = d.serving;
  const model = d.model ?? d.models.map(m => m.name).join(', ');
  const chat = d.models.some(m => m.task === 'chat');
  return (
    <li className="jp-ModelDeploy-item" data-deployment={d.id} data-name={d.name}>
      <div className="jp-ModelDeploy-itemHeader">
        <span className="jp-ModelDeploy-name" title={d.id}>
          {d.name}
        </span>
        <StatusBadge status={d.status} />
      </div>
      <div className="jp-ModelDeploy-details">
        <span className="jp-ModelDeploy-kindLabel">{d.kind}</span>
        <span className="jp-ModelDeploy-model" title={model}>
          {shortModel(model)}
        </span>
        {serving && d.idle_for_s >= 1 && (
          <span className="jp-ModelDeploy-idle" title="Time since the last request">
            idle {formatDuration(d.idle_for_s)}
          </span>
        )}
        {d.requests_in_flight > 0 && (
          <span className="jp-ModelDeploy-inflight">{d.requests_in_flight} in flight</span>
        )}
      </div>
      {d.status === 'loading' && d.progress && <LoadBar progress={d.progress} />}
      {!d.live && d.status_reason && (
        <Reason d={d} />
      )}
      {d.placement === 'ray' && d.live && <Replicas d={d} />}
      <div className="jp-ModelDeploy-actions">
        {d.actions.includes('stop') && (
          <ActionButton icon={stopIcon} label="Stop" action="stop" onClick={() => actions.stop(d)} />
        )}
        {d.actions.includes('relaunch') && (
          <ActionButton icon={runIcon} label="Relaunch" action="relaunch" onClick={() => actions.relaunch(d)} />
        )}
        <ActionButton icon={duplicateIcon} label="Clone…" action="clone" onClick={() => actions.clone(d)} />
        <ActionButton icon={downloadIcon} label="Export configuration" action="export" onClick={() => actions.exportConfig(d)} />
        <ActionButton icon={linkIcon} label="Copy endpoint" action="copy-endpoint" onClick={() => actions.copyEndpoint(d)} />
        <ActionButton
          icon={lockIcon}
          label="Copy a new API key"
          action="copy-key"
          disabled={!!d.public}
          onClick={() => actions.copyApiKey(d)}
        />
        <ActionButton icon={shareIcon} label="Share on the JupyterHub…" action="share" onClick={() => actions.share(d)} />
        <ActionButton
          icon={copyIcon}
          label="Copy test command"
          action="copy-test"
          disabled={!serving}
          onClick={() => actions.copyTestCommand(d)}
        />
        <ActionButton icon={textEditorIcon} label="Console log" action="logs" onClick={() => actions.openLogs(d)} />
        <ActionButton icon={offlineBoltIcon} label="Dashboard" action="dashboard" onClick={() => actions.openDashboard(d)} />
        <ActionButton
          icon={extensionIcon}
          label={chat ? 'Register with jupyter-ai…' : 'jupyter-ai: this deployment serves no chat model'}
          action="jupyter-ai"
          disabled={!chat}
          onClick={() => actions.registerJupyterAI(d)}
        />
        {d.actions.includes('delete') && <ActionButton icon={deleteIcon} label="Remove" action="remove" onClick={() => actions.remove(d)} />}
      </div>
    </li>
  );
}

function PanelContent(props: { model: DeploymentsModel; actions: IPanelActions }): JSX.Element {
  const { model, actions } = props;
  return (
    <div className="jp-ModelDeploy-panelContent">
      <div className="jp-ModelDeploy-toolbar">
        <h2 className="jp-ModelDeploy-title">Model Deployments</h2>
        <ActionButton icon={addIcon} label="Launch new deployment" action="launch-new" onClick={() => actions.launchNew()} />
        <ActionButton icon={refreshIcon} label="Refresh" action="refresh" onClick={() => model.refresh()} />
      </div>
      {model.error && (
        <div className="jp-ModelDeploy-message jp-mod-error" role="alert">
          {model.error}
        </div>
      )}
      {!model.loaded ? (
        <div className="jp-ModelDeploy-empty">Loading…</div>
      ) : model.deployments.length === 0 ? (
        <div className="jp-ModelDeploy-empty">
          No deployments yet.{' '}
          <button className="jp-mod-styled" onClick={() => actions.launchNew()}>
            Launch one
          </button>
        </div>
      ) : (
        <ul className="jp-ModelDeploy-list">
          {model.deployments.map(d => (
            <DeploymentItem key={d.id} d={d} actions={actions} />
          ))}
        </ul>
      )}
      <TokensSection model={model} actions={actions} />
    </div>
  );
}

/** The left-sidebar panel. */
export class DeploymentsPanel extends ReactWidget {
  constructor(
    readonly model: DeploymentsModel,
    private actions: IPanelActions
  ) {
    super();
    this.id = 'jupyter-modeldeploy-panel';
    this.addClass('jp-ModelDeploy-panel');
    this.title.caption = 'Model Deployments';
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => <PanelContent model={this.model} actions={this.actions} />}
      </UseSignal>
    );
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.setVisible(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.setVisible(false);
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this.model.setVisible(true);
    }
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }
}
