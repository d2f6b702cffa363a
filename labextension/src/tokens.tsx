import { Clipboard, Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import React from 'react';

import { IDeployment } from './api';

export interface ITokenRequest {
  name?: string;
  deployment?: string;
  project?: string;
}

/** The body of the "Generate token" dialog: a name and a scope. */
export class TokenRequestBody extends Widget {
  constructor(deployments: IDeployment[]) {
    super();
    this.addClass('jp-ModelDeploy-tokenRequest');
    const name = document.createElement('input');
    name.className = 'jp-mod-styled';
    name.name = 'name';
    name.placeholder = 'name (optional)';
    const scope = document.createElement('select');
    scope.className = 'jp-mod-styled';
    scope.name = 'scope';
    const add = (value: string, label: string) => {
      const option = document.createElement('option');
      option.value = value;
      option.textContent = label;
      scope.appendChild(option);
    };
    add('', 'all deployments');
    for (const project of [...new Set(deployments.map(d => d.project))]) {
      add(`project:${project}`, `project ${project}`);
    }
    for (const d of deployments) {
      add(`deployment:${d.id}`, `deployment ${d.name}`);
    }
    for (const [label, input] of [
      ['Name', name],
      ['Scope', scope]
    ] as const) {
      const row = document.createElement('label');
      row.textContent = label;
      row.appendChild(input);
      this.node.appendChild(row);
    }
    this.nameInput = name;
    this.scopeSelect = scope;
  }

  getValue(): ITokenRequest {
    const request: ITokenRequest = {};
    if (this.nameInput.value.trim()) {
      request.name = this.nameInput.value.trim();
    }
    const scope = this.scopeSelect.value;
    if (scope.startsWith('project:')) {
      request.project = scope.slice('project:'.length);
    } else if (scope.startsWith('deployment:')) {
      request.deployment = scope.slice('deployment:'.length);
    }
    return request;
  }

  private nameInput: HTMLInputElement;
  private scopeSelect: HTMLSelectElement;
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
