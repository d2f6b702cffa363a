import { Clipboard, Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import React from 'react';

import { IDeployment, IQuotas, IToken, ITokenRequest, TokenPriority, TokenRole } from './api';
import { QUOTA_FIELDS } from './quotas';

/** What the "Generate token" form holds, as typed (parsed by `tokenRequest`). */
export interface ITokenForm {
  scope: string;
  role: TokenRole;
  priority: TokenPriority;
  models: string[];
  name: string;
  expiresInS: string;
  quotas: IQuotaForm;
}

/** The four quota fields as typed ('' is no limit). */
export type IQuotaForm = Record<keyof IQuotas, string>;

const EXPIRY: [string, string][] = [
  ['', 'never'],
  ['3600', 'in 1 hour'],
  ['86400', 'in 1 day'],
  ['604800', 'in 7 days'],
  ['2592000', 'in 30 days'],
  ['7776000', 'in 90 days'],
  ['31536000', 'in 1 year']
];

const MAX_LIMIT = 1e12; // the server's bound (schemas.Limit)

/** The quotas of a form, or the message for the first one that is not a whole number ≥ 1 (empty: no limit). */
export function parseQuotas(form: IQuotaForm): Partial<IQuotas> | string {
  const quotas: Partial<IQuotas> = {};
  for (const { key, label } of QUOTA_FIELDS) {
    const text = form[key].trim();
    if (!text) {
      continue;
    }
    const value = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < 1 || value > MAX_LIMIT) {
      return `${label}: "${text}" is not a whole number from 1 to ${MAX_LIMIT} (leave it empty for no limit).`;
    }
    quotas[key] = value;
  }
  return quotas;
}

/** The request a form asks for, or the message saying what is wrong with it. */
export function tokenRequest(form: ITokenForm): ITokenRequest | string {
  const request: ITokenRequest = { role: form.role };
  if (form.priority !== 'interactive') {
    request.priority = form.priority;
  }
  if (form.scope.startsWith('deployment:')) {
    request.deployment = form.scope.slice('deployment:'.length);
    if (form.models.length) {
      request.models = form.models;
    }
  } else if (form.scope.startsWith('project:')) {
    request.project = form.scope.slice('project:'.length);
  } else {
    return 'Choose a scope: a token opens one deployment or one project. Launch a deployment first if there is none.';
  }
  if (form.name.trim()) {
    request.name = form.name.trim();
  }
  if (form.expiresInS) {
    request.expires_in_s = Number(form.expiresInS);
  }
  const quotas = parseQuotas(form.quotas);
  if (typeof quotas === 'string') {
    return quotas;
  }
  if (Object.keys(quotas).length) {
    request.quotas = quotas;
  }
  return request;
}

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function row(label: string, input: HTMLElement, hint?: HTMLElement, extraClass = ''): HTMLLabelElement {
  const className = `jp-ModelDeploy-formRow ${extraClass}`.trim();
  const node = element('label', { className }, element('span', {}, label), input);
  if (hint) {
    node.appendChild(hint);
  }
  return node;
}

function select(name: string, options: [string, string][], value: string): HTMLSelectElement {
  const node = element('select', { className: 'jp-mod-styled', name });
  for (const [optionValue, label] of options) {
    node.appendChild(element('option', { value: optionValue, textContent: label }));
  }
  node.value = value;
  return node;
}

/**
 * The error of the last try, at the top of a form that is shown again. (Not `jp-mod-error`:
 * the dialog would keep its accept button disabled while the message is there.)
 */
function formMessage(message: string | null): HTMLElement | null {
  return message
    ? element('div', {
        className: 'jp-ModelDeploy-message jp-ModelDeploy-formMessage',
        role: 'alert',
        textContent: message
      })
    : null;
}

/**
 * Outline the inputs the server named (`name`, `quotas.daily_tokens`, `expires_in_s`) until they
 * are changed. (Not `jp-mod-error`, for the reason above.)
 */
function markFaults(node: HTMLElement, faults: string[]): void {
  const names: Record<string, string> = { expires_in_s: 'expiry', deployment: 'scope', project: 'scope' };
  for (const field of faults) {
    const last = field.split('.').filter(part => !/^\d+$/.test(part)).pop() ?? field;
    const input = node.querySelector<HTMLElement>(`[name="${CSS.escape(names[last] ?? last)}"]`);
    if (input) {
      input.classList.add('jp-ModelDeploy-atFault');
      input.addEventListener('input', () => input.classList.remove('jp-ModelDeploy-atFault'), { once: true });
    }
  }
}

/**
 * The four quota inputs: text, so that what was typed comes back as typed; their pattern makes
 * a bad value `:invalid` as it is typed, which shows its hint and disables the dialog's accept
 * button. `parseQuotas` checks again (the bound), and the server after it.
 */
class QuotaInputs {
  constructor(values: Partial<IQuotaForm>) {
    this.node = element('fieldset', { className: 'jp-ModelDeploy-quotas' }, element('legend', {}, 'Quotas (empty: no limit)'));
    for (const { key, label } of QUOTA_FIELDS) {
      const input = element('input', {
        className: 'jp-mod-styled',
        name: key,
        inputMode: 'numeric',
        placeholder: 'no limit',
        pattern: '\\s*[1-9][0-9]{0,12}\\s*',
        value: values[key] ?? ''
      });
      this.inputs[key] = input;
      const hint = element('span', { className: 'jp-ModelDeploy-fieldError' }, 'a whole number, at least 1');
      this.node.appendChild(row(label, input, hint));
    }
  }

  value(): IQuotaForm {
    const entries = QUOTA_FIELDS.map(({ key }) => [key, this.inputs[key]!.value]);
    return Object.fromEntries(entries) as IQuotaForm;
  }

  readonly node: HTMLFieldSetElement;
  private inputs: Partial<Record<keyof IQuotas, HTMLInputElement>> = {};
}

/** The body of the "Generate token" dialog: scope, role, priority, models, label, expiry and quotas. */
export class TokenRequestBody extends Widget {
  /** `faults`: the fields the server named in its refusal, marked in the form. */
  constructor(
    deployments: IDeployment[],
    initial: ITokenForm | null = null,
    message: string | null = null,
    faults: string[] = []
  ) {
    super();
    this.addClass('jp-ModelDeploy-tokenRequest');
    this.deployments = deployments;
    const scopes: [string, string][] = deployments.map(d => [`deployment:${d.id}`, `deployment ${d.name}`]);
    for (const project of [...new Set(deployments.map(d => d.project))]) {
      scopes.push([`project:${project}`, `project ${project}`]);
    }
    this.scope = select('scope', scopes, initial?.scope ?? scopes[0]?.[0] ?? '');
    this.role = select(
      'role',
      [
        ['inference', 'inference: the serving API'],
        ['read', 'read: health, models and metrics only']
      ],
      initial?.role ?? 'inference'
    );
    this.priority = select(
      'priority',
      [
        ['interactive', 'interactive: served first when the deployment is busy'],
        ['batch', 'batch: waits behind interactive keys']
      ],
      initial?.priority ?? 'interactive'
    );
    this.name = element('input', {
      className: 'jp-mod-styled',
      name: 'name',
      placeholder: 'e.g. team app (optional)',
      value: initial?.name ?? ''
    });
    this.expiry = select('expiry', EXPIRY, initial?.expiresInS ?? '');
    this.models = element('fieldset', { className: 'jp-ModelDeploy-modelChoice' });
    this.quotas = new QuotaInputs(initial?.quotas ?? {});
    this.scope.addEventListener('change', () => this.showModels([]));
    const notice = formMessage(message);
    if (notice) {
      this.node.appendChild(notice);
    }
    this.node.append(
      row('Scope', this.scope, undefined, 'jp-mod-wide'),
      this.models,
      row('Role', this.role),
      row('Priority', this.priority),
      row('Expires', this.expiry),
      row('Label', this.name, undefined, 'jp-mod-wide'),
      this.quotas.node
    );
    this.showModels(initial?.models ?? []);
    markFaults(this.node, faults);
  }

  /** One box per model of the chosen deployment (none ticked: all of them); nothing for a project. */
  private showModels(ticked: string[]): void {
    const scope = this.scope.value;
    const dep = scope.startsWith('deployment:')
      ? this.deployments.find(d => d.id === scope.slice('deployment:'.length))
      : undefined;
    this.models.replaceChildren(element('legend', {}, 'Models (none ticked: every model of the deployment)'));
    this.models.hidden = !dep || dep.models.length === 0;
    for (const m of dep?.models ?? []) {
      const box = element('input', { type: 'checkbox', name: 'model', value: m.name, checked: ticked.includes(m.name) });
      this.models.appendChild(element('label', { className: 'jp-ModelDeploy-check' }, box, ` ${m.name} (${m.task})`));
    }
  }

  getValue(): ITokenForm {
    const boxes = this.models.querySelectorAll<HTMLInputElement>('input[name="model"]:checked');
    return {
      scope: this.scope.value,
      role: this.role.value as TokenRole,
      priority: this.priority.value as TokenPriority,
      models: [...boxes].map(box => box.value),
      name: this.name.value,
      expiresInS: this.expiry.value,
      quotas: this.quotas.value()
    };
  }

  private deployments: IDeployment[];
  private scope: HTMLSelectElement;
  private role: HTMLSelectElement;
  private priority: HTMLSelectElement;
  private name: HTMLInputElement;
  private expiry: HTMLSelectElement;
  private models: HTMLFieldSetElement;
  private quotas: QuotaInputs;
}

/** A token's quotas as the form shows them. */
export function quotaForm(quotas: IQuotas | null): IQuotaForm {
  const entries = QUOTA_FIELDS.map(({ key }) => [key, quotas?.[key] != null ? String(quotas[key]) : '']);
  return Object.fromEntries(entries) as IQuotaForm;
}

/** The body of the "Change quotas" dialog: the four quotas, filled with the current ones. */
export class QuotasBody extends Widget {
  constructor(token: IToken, values: IQuotaForm, message: string | null = null, faults: string[] = []) {
    super();
    this.addClass('jp-ModelDeploy-tokenRequest');
    const notice = formMessage(message);
    if (notice) {
      this.node.appendChild(notice);
    }
    this.node.appendChild(
      element(
        'p',
        { className: 'jp-ModelDeploy-formHint' },
        `The new quotas replace the old ones from the key's next request. ${token.role} key ${token.prefix}…`
      )
    );
    this.quotas = new QuotaInputs(values);
    this.node.appendChild(this.quotas.node);
    markFaults(this.node, faults);
  }

  getValue(): IQuotaForm {
    return this.quotas.value();
  }

  private quotas: QuotaInputs;
}

function SecretBox(props: { secret: string; note: string }): JSX.Element {
  const [copied, setCopied] = React.useState(false);
  return (
    <div className="jp-ModelDeploy-secret">
      <p>{props.note}</p>
      <div className="jp-ModelDeploy-secretRow">
        <input
          className="jp-mod-styled jp-ModelDeploy-secretValue"
          readOnly
          value={props.secret}
          onFocus={event => event.target.select()}
        />
        <button
          className="jp-mod-styled"
          data-action="copy-secret"
          onClick={() => {
            Clipboard.copyToSystem(props.secret);
            setCopied(true);
          }}
        >
          {copied ? 'Copied' : 'Copy'}
        </button>
      </div>
    </div>
  );
}

/** Shows a new token once, already copied to the clipboard. */
export async function showSecretOnce(title: string, secret: string, scope: string): Promise<void> {
  Clipboard.copyToSystem(secret);
  await showDialog({
    title,
    body: (
      <SecretBox
        secret={secret}
        note={`A new token for ${scope}, copied to the clipboard. It is shown only this once: the server keeps only its hash.`}
      />
    ),
    buttons: [Dialog.okButton({ label: 'Done' })]
  });
}
