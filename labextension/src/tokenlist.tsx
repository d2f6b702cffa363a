import { deleteIcon, editIcon } from '@jupyterlab/ui-components';
import React from 'react';

import { IToken } from './api';
import { ActionButton } from './button';
import { formatDuration, formatTime } from './format';
import { DeploymentsModel } from './model';
import type { IPanelActions } from './panel';
import { quotaParts } from './quotas';

/** "deployment smol", "project team-a": what a token opens. */
/** When a key was made and last used, as two spans of a key's times line. */
export function KeyTimes(props: { token: IToken; now: number }): JSX.Element {
  const { token: t, now } = props;
  return (
    <>
      <span title={formatTime(t.created_at)}>created {ago(t.created_at, now)}</span>
      <span
        className="jp-ModelDeploy-tokenUsed"
        data-used={t.last_used_at === null ? 'never' : 'yes'}
        title={t.last_used_at === null ? '' : formatTime(t.last_used_at)}
      >
        {t.last_used_at === null ? 'never used' : `used ${ago(t.last_used_at, now)}`}
      </span>
    </>
  );
}

export function tokenScope(t: IToken, names: Map<string, string>): string {
  if (t.deployment_id) {
    return `deployment ${names.get(t.deployment_id) ?? t.deployment_id}`;
  }
  return t.project ? `project ${t.project}` : 'all deployments';
}

/** "3 min 4 s ago". */
export function ago(epochSeconds: number, now: number): string {
  return `${formatDuration(Math.max(0, now - epochSeconds))} ago`;
}

/** Who got a shared key, and through which of their groups it may have been. */
function hubTitle(t: IToken): string {
  const groups = t.hub_groups?.length ? ` (groups: ${t.hub_groups.join(', ')})` : '';
  return `${t.hub_user}${groups} got this key on the Hub's share page`;
}

function TokenItem(props: { t: IToken; names: Map<string, string>; actions: IPanelActions }): JSX.Element {
  const { t, names, actions } = props;
  const now = Date.now() / 1000;
  const expired = t.expires_at !== null && t.expires_at <= now;
  const quotas = quotaParts(t.quotas);
  return (
    <li className="jp-ModelDeploy-token" data-token={t.id} data-role={t.role}>
      <div className="jp-ModelDeploy-tokenHeader">
        <span className="jp-ModelDeploy-tokenName" title={t.name ? `${t.name} (${t.id})` : t.id}>
          {t.name || t.prefix}
        </span>
        <code className="jp-ModelDeploy-tokenPrefix" title="The key's first characters">
          {t.prefix}…
        </code>
        <ActionButton icon={editIcon} label="Change quotas…" action="edit-quotas" onClick={() => actions.editQuotas(t)} />
        <ActionButton icon={deleteIcon} label="Revoke" action="revoke" onClick={() => actions.revokeToken(t)} />
      </div>
      <div className="jp-ModelDeploy-tokenLine">
        <span className={`jp-ModelDeploy-tokenRole jp-mod-${t.role}`}>{t.role}</span>
        {t.priority === 'batch' ? (
          <span className="jp-ModelDeploy-tokenPriority" title="Waits behind interactive keys when the deployment is busy">
            batch
          </span>
        ) : null}
        {t.hub_user ? (
          <span className="jp-ModelDeploy-tokenHub" title={hubTitle(t)}>
            Hub: {t.hub_user}
          </span>
        ) : null}
        <span className="jp-ModelDeploy-tokenScope">{tokenScope(t, names)}</span>
        <span className="jp-ModelDeploy-tokenModels" title="The models the key may call">
          {t.models ? t.models.join(', ') : 'all models'}
        </span>
      </div>
      <div className="jp-ModelDeploy-tokenLine jp-ModelDeploy-tokenQuotas" title="Past a quota the gateway answers 429">
        {quotas.length === 0 ? (
          <span>no quotas</span>
        ) : (
          // One span each, so that a narrow sidebar wraps between quotas, never inside one.
          quotas.map((part, i) => <span key={part}>{i ? `· ${part}` : part}</span>)
        )}
      </div>
      <div className="jp-ModelDeploy-tokenLine jp-ModelDeploy-tokenTimes">
        <KeyTimes token={t} now={now} />
        <span className={expired ? 'jp-ModelDeploy-tokenExpired' : undefined} title={formatTime(t.expires_at)}>
          {t.expires_at === null
            ? 'no expiry'
            : expired
              ? 'expired'
              : `expires in ${formatDuration(t.expires_at - now)}`}
        </span>
      </div>
    </li>
  );
}

/** The "API tokens" section: each live token with its role, scope, quotas and times; generate, change, revoke. */
export function TokensSection(props: { model: DeploymentsModel; actions: IPanelActions }): JSX.Element {
  const [open, setOpen] = React.useState(false);
  const names = new Map(props.model.deployments.map(d => [d.id, d.name]));
  const tokens = props.model.tokens.filter(t => !t.revoked_at);
  return (
    <details
      className="jp-ModelDeploy-tokens"
      open={open}
      onToggle={event => {
        const isOpen = (event.target as HTMLDetailsElement).open;
        setOpen(isOpen);
        props.model.watchTokens(isOpen);
      }}
    >
      <summary>API tokens</summary>
      <div className="jp-ModelDeploy-tokensBody">
        <button className="jp-mod-styled jp-ModelDeploy-newToken" onClick={() => void props.actions.createToken()}>
          Generate token…
        </button>
        {tokens.length === 0 ? (
          <div className="jp-ModelDeploy-empty">No tokens.</div>
        ) : (
          <ul className="jp-ModelDeploy-tokenList">
            {tokens.map(t => (
              <TokenItem key={t.id} t={t} names={names} actions={props.actions} />
            ))}
          </ul>
        )}
      </div>
    </details>
  );
}
