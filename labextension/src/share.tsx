import { Clipboard, Dialog, showDialog } from '@jupyterlab/apputils';
import { deleteIcon } from '@jupyterlab/ui-components';
import React from 'react';

import {
  ApiError,
  IDeployment,
  IFieldError,
  IShareState,
  IShareWith,
  IToken,
  ModelDeployClient,
  TokenPriority,
  TokenRole
} from './api';
import { ActionButton } from './button';
import { QUOTA_FIELDS } from './quotas';
import { KeyTimes } from './tokenlist';
import { IQuotaForm, parseQuotas, quotaForm } from './tokens';

/** What the share form holds, as typed (parsed by `shareRequest`). */
export interface IShareForm {
  /** Hub user names, separated by commas or new lines. */
  users: string;
  groups: string;
  role: TokenRole;
  priority: TokenPriority;
  /** The models ticked (none: every model of the deployment). */
  models: string[];
  quotas: IQuotaForm;
}

/** "bob, carol" (or one a line) as ["bob", "carol"]; the server checks each name and lower-cases it. */
export function splitNames(text: string): string[] {
  return text
    .split(/[,;\n]+/)
    .map(name => name.trim())
    .filter(name => name !== '');
}

/** Saved settings as the form shows them. */
export function shareForm(share: IShareWith): IShareForm {
  return {
    users: share.users.join(', '),
    groups: share.groups.join(', '),
    role: share.role,
    priority: share.priority,
    models: share.models ?? [],
    quotas: quotaForm(share.quotas)
  };
}

/** The `share_with` a form asks for, or the message saying what is wrong with it. */
export function shareRequest(form: IShareForm): IShareWith | string {
  const quotas = parseQuotas(form.quotas);
  if (typeof quotas === 'string') {
    return quotas;
  }
  return {
    users: splitNames(form.users),
    groups: splitNames(form.groups),
    role: form.role,
    models: form.models.length ? form.models : null,
    priority: form.priority,
    quotas: {
      requests_per_minute: quotas.requests_per_minute ?? null,
      tokens_per_minute: quotas.tokens_per_minute ?? null,
      max_in_flight: quotas.max_in_flight ?? null,
      daily_tokens: quotas.daily_tokens ?? null
    }
  };
}

/** Whether the form holds the saved settings (names compared as the server keeps them). */
function unchanged(form: IShareForm, saved: IShareWith): boolean {
  const asked = shareRequest(form);
  if (typeof asked === 'string') {
    return false;
  }
  const lower = (names: string[]) => names.map(name => name.toLowerCase());
  const normal = (s: IShareWith) =>
    JSON.stringify({ ...s, users: lower(s.users), groups: lower(s.groups), models: s.models ? [...s.models].sort() : null });
  return normal(asked) === normal(saved);
}

/** "bob", "bob and carol", "bob, carol and the members of ml-team". */
function listing(parts: string[]): string {
  return parts.length < 2 ? parts.join('') : `${parts.slice(0, -1).join(', ')} and ${parts[parts.length - 1]}`;
}

/** The people a share names, in words. */
function whom(share: IShareWith): string {
  const parts = [...share.users];
  if (share.groups.length) {
    parts.push(`the members of ${listing(share.groups)}`);
  }
  return listing(parts);
}

/** "bob's key": whose key a shared one is. */
function whoseKey(t: IToken): string {
  return `${t.hub_user || t.name || t.prefix}'s key`;
}

/** The input a field the server named belongs to: `users.0` → users, `quotas.daily_tokens` → daily_tokens. */
function inputOf(field: string): string {
  const parts = field.split('.');
  return parts[0] === 'quotas' && parts[1] ? parts[1] : parts[0];
}

/** What the server said of a field, naming the entry it means ("bad name": …) for a list of names. */
function faultLine(error: IFieldError, sent: IShareWith): string {
  const [list, index] = error.field.split('.');
  const names = list === 'users' ? sent.users : list === 'groups' ? sent.groups : null;
  const name = names && index !== undefined ? names[Number(index)] : undefined;
  return name !== undefined ? `${error.field} "${name}": ${error.message}` : `${error.field}: ${error.message}`;
}

type Faults = Record<string, string[]>;

function className(...names: (string | false | null | undefined)[]): string {
  return names.filter(Boolean).join(' ');
}

/** The share page's address with a copy button, and what to do with it; or why there is none. */
function HubPage(props: { d: IDeployment; state: IShareState }): JSX.Element {
  const { d, state } = props;
  const [copied, setCopied] = React.useState(false);
  if (!state.hub || !state.share_url) {
    return (
      <div className="jp-ModelDeploy-message jp-mod-info jp-ModelDeploy-shareNoHub">
        This Jupyter server does not run under a JupyterHub, so there is no share page: hand out keys from the API
        tokens section (Generate token…) as before. The settings below are still saved with {d.name} and travel with
        its export and clone.
      </div>
    );
  }
  const share = state.share_with;
  const named = share.users.length + share.groups.length > 0;
  const url = state.share_url;
  return (
    <div className="jp-ModelDeploy-shareHub">
      <p className="jp-ModelDeploy-shareHowTo">
        {named
          ? `Send this link to ${whom(share)}: there each signs in with the Hub and gets a key of their own for ${d.name}, with the role, models, priority and quotas below.`
          : `Nobody is named yet: name Hub users or groups below and save, then send them this link. There each signs in with the Hub and gets a key of their own for ${d.name}.`}
      </p>
      <div className="jp-ModelDeploy-shareLink">
        <a className="jp-ModelDeploy-shareUrl" href={url} target="_blank" rel="noopener noreferrer" title="The share page">
          {url}
        </a>
        <button
          type="button"
          className="jp-mod-styled"
          data-action="copy-share-url"
          onClick={() => {
            Clipboard.copyToSystem(url);
            setCopied(true);
          }}
        >
          {copied ? 'Copied' : 'Copy'}
        </button>
      </div>
    </div>
  );
}

/** The keys people got on the share page: whose, its prefix, created and last used; revoke one. */
function Holders(props: { holders: IToken[]; onRevoke: (t: IToken) => Promise<void> }): JSX.Element {
  const now = Date.now() / 1000;
  return (
    <section className="jp-ModelDeploy-shareHolders">
      <h3 className="jp-ModelDeploy-shareHeading">Keys given out on the share page ({props.holders.length})</h3>
      {props.holders.length === 0 ? (
        <div className="jp-ModelDeploy-formHint">Nobody holds one yet.</div>
      ) : (
        <ul className="jp-ModelDeploy-tokenList">
          {props.holders.map(t => (
            <li key={t.id} className="jp-ModelDeploy-token jp-ModelDeploy-holder" data-token={t.id} data-hub-user={t.hub_user}>
              <div className="jp-ModelDeploy-tokenHeader">
                <span className="jp-ModelDeploy-tokenName" title={`${t.name ?? t.hub_user} (${t.id})`}>
                  {t.hub_user}
                </span>
                <code className="jp-ModelDeploy-tokenPrefix" title="The key's first characters">
                  {t.prefix}…
                </code>
                <ActionButton
                  icon={deleteIcon}
                  label={`Revoke ${whoseKey(t)}: their clients get 401 at once`}
                  action="revoke-holder"
                  onClick={() => props.onRevoke(t)}
                />
              </div>
              <div className="jp-ModelDeploy-tokenLine jp-ModelDeploy-tokenTimes">
                <KeyTimes token={t} now={now} />
                {t.hub_groups?.length ? (
                  <span className="jp-ModelDeploy-holderGroups" title="Their Hub groups, as last reported">
                    groups: {t.hub_groups.join(', ')}
                  </span>
                ) : null}
              </div>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

/**
 * The body of the Share dialog: the Hub's share page (or why there is none), the settings with
 * their own Save (the dialog stays open: a refusal comes back in the form with the fields named,
 * the inputs kept), the keys a save revoked, and the keys given out with a revoke button each.
 */
function ShareBody(props: {
  d: IDeployment;
  client: ModelDeployClient;
  initial: IShareState;
  onKeysChanged: () => void;
}): JSX.Element {
  const { d, client } = props;
  const [state, setState] = React.useState<IShareState>(props.initial);
  const [form, setForm] = React.useState<IShareForm>(() => shareForm(props.initial.share_with));
  const [faults, setFaults] = React.useState<Faults>({});
  const [message, setMessage] = React.useState<string | null>(null);
  const [revoked, setRevoked] = React.useState<IToken[] | null>(null);
  const [busy, setBusy] = React.useState(false);

  const change = (key: string, update: Partial<IShareForm>) => {
    setForm(f => ({ ...f, ...update }));
    setFaults(({ [key]: _, ...rest }) => rest);
  };

  const save = async () => {
    const request = shareRequest(form);
    if (typeof request === 'string') {
      setMessage(request);
      setFaults({});
      return;
    }
    setBusy(true);
    try {
      const next = await client.updateShare(d.id, request);
      setState(next);
      setForm(shareForm(next.share_with));
      setFaults({});
      setMessage(null);
      setRevoked(next.revoked);
      props.onKeysChanged();
    } catch (err) {
      const refused = err instanceof ApiError && err.status >= 400 && err.status < 500;
      setMessage(refused ? (err as ApiError).message : `Cannot save the share settings: ${(err as Error).message}`);
      const named: Faults = {};
      for (const error of refused ? (err as ApiError).errors : []) {
        (named[inputOf(error.field)] ??= []).push(faultLine(error, request));
      }
      if (refused && !(err as ApiError).errors.length && /serves no model/.test((err as Error).message)) {
        named.models = [];
      }
      setFaults(named);
      setRevoked(null);
    } finally {
      setBusy(false);
    }
  };

  const revoke = async (t: IToken) => {
    try {
      await client.revokeToken(t.id);
      setState({ ...(await client.share(d.id)), revoked: [] });
      props.onKeysChanged();
    } catch (err) {
      setMessage(`Cannot revoke ${whoseKey(t)}: ${(err as Error).message}`);
    }
  };

  const fault = (key: string) => (key in faults ? 'jp-ModelDeploy-atFault' : null);
  const faultLines = (key: string) =>
    (faults[key] ?? []).map(line => (
      <span key={line} className="jp-ModelDeploy-fieldFault">
        {line}
      </span>
    ));
  const quotasValid = typeof parseQuotas(form.quotas) !== 'string';
  const models = [...d.models.map(m => m.name), ...form.models.filter(m => !d.models.some(dm => dm.name === m))];
  const task = new Map(d.models.map(m => [m.name, m.task]));
  const saved = unchanged(form, state.share_with);

  return (
    <div className="jp-ModelDeploy-share" data-hub={state.hub ? 'yes' : 'no'}>
      <HubPage d={d} state={state} />
      <form
        className="jp-ModelDeploy-tokenRequest jp-ModelDeploy-shareForm"
        onSubmit={event => {
          // Enter in a field submits too (the dialog leaves Enter to the form: it has no default button).
          event.preventDefault();
          if (!busy && quotasValid) {
            void save();
          }
        }}
      >
        {(
          [
            ['users', 'Hub users', 'e.g. bob, carol'],
            ['groups', 'Hub groups', 'e.g. ml-team']
          ] as const
        ).map(([key, label, placeholder]) => (
          <label className="jp-ModelDeploy-formRow" key={key}>
            <span>{label}</span>
            <input
              className={className('jp-mod-styled', fault(key))}
              name={key}
              placeholder={placeholder}
              value={form[key]}
              onChange={event => change(key, { [key]: event.target.value })}
            />
            {faultLines(key)}
          </label>
        ))}
        <p className="jp-ModelDeploy-formHint">
          Names as the Hub knows them, separated by commas. Each person named, and each member of a group named, may get
          a key of their own; a name taken out loses its key when you save.
        </p>
        <label className="jp-ModelDeploy-formRow">
          <span>Role</span>
          <select
            className={className('jp-mod-styled', fault('role'))}
            name="role"
            value={form.role}
            onChange={event => change('role', { role: event.target.value as TokenRole })}
          >
            <option value="inference">inference: the serving API</option>
            <option value="read">read: health, models, metrics</option>
          </select>
        </label>
        <label className="jp-ModelDeploy-formRow">
          <span>Priority</span>
          <select
            className={className('jp-mod-styled', fault('priority'))}
            name="priority"
            value={form.priority}
            onChange={event => change('priority', { priority: event.target.value as TokenPriority })}
          >
            <option value="interactive">interactive: served first</option>
            <option value="batch">batch: waits behind interactive</option>
          </select>
        </label>
        {models.length > 0 && (
          <fieldset className={className('jp-ModelDeploy-modelChoice', fault('models'))}>
            <legend>Models (none ticked: every model of the deployment)</legend>
            {models.map(name => (
              <label key={name} className="jp-ModelDeploy-check">
                <input
                  type="checkbox"
                  name="model"
                  value={name}
                  checked={form.models.includes(name)}
                  onChange={event =>
                    change('models', {
                      models: event.target.checked ? [...form.models, name] : form.models.filter(m => m !== name)
                    })
                  }
                />{' '}
                {task.has(name) ? `${name} (${task.get(name)})` : `${name} (not served now)`}
              </label>
            ))}
            {faultLines('models')}
          </fieldset>
        )}
        <fieldset className="jp-ModelDeploy-quotas">
          <legend>Quotas of each shared key (empty: no limit)</legend>
          {QUOTA_FIELDS.map(({ key, label }) => (
            <label key={key} className="jp-ModelDeploy-formRow">
              <span>{label}</span>
              <input
                className={className('jp-mod-styled', fault(key))}
                name={key}
                inputMode="numeric"
                placeholder="no limit"
                pattern={'\\s*[1-9][0-9]{0,12}\\s*'}
                value={form.quotas[key]}
                onChange={event => change(key, { quotas: { ...form.quotas, [key]: event.target.value } })}
              />
              <span className="jp-ModelDeploy-fieldError">a whole number, at least 1</span>
              {faultLines(key)}
            </label>
          ))}
        </fieldset>
        {message && (
          <div className="jp-ModelDeploy-message jp-ModelDeploy-formMessage" role="alert">
            {message}
          </div>
        )}
        {revoked && !message && (saved || revoked.length > 0) && (
          <div className="jp-ModelDeploy-message jp-mod-info jp-ModelDeploy-shareSaved" role="status">
            {saved && 'Saved: in force now. '}
            {revoked.length > 0 && (
              <span className="jp-ModelDeploy-shareRevoked">Revoked: {revoked.map(whoseKey).join(', ')}.</span>
            )}
          </div>
        )}
        <div className="jp-ModelDeploy-shareSave">
          <button
            type="submit"
            className="jp-mod-styled jp-mod-accept"
            data-action="save-share"
            disabled={busy || !quotasValid}
          >
            {busy ? 'Saving…' : 'Save'}
          </button>
          <span className="jp-ModelDeploy-formHint" data-saved={saved ? 'yes' : 'no'}>
            {saved ? '' : 'Not saved yet.'}
          </span>
        </div>
      </form>
      {(state.hub || state.holders.length > 0) && <Holders holders={state.holders} onRevoke={revoke} />}
    </div>
  );
}

/** The Share dialog of a deployment, open on its current share state. */
export async function showShareDialog(
  client: ModelDeployClient,
  d: IDeployment,
  state: IShareState,
  onKeysChanged: () => void
): Promise<void> {
  await showDialog({
    title: `Share ${d.name}`,
    body: <ShareBody d={d} client={client} initial={state} onKeysChanged={onKeysChanged} />,
    buttons: [Dialog.cancelButton({ label: 'Close' })],
    // No default button: Enter in a field submits the share form (Save) instead of closing the dialog.
    defaultButton: -1,
    focusNodeSelector: 'input[name="users"]'
  });
}
