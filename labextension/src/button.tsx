import { LabIcon } from '@jupyterlab/ui-components';
import React from 'react';

/** An icon button of the panel: its label is the tooltip and the accessible name, `action` its test hook. */
export function ActionButton(props: {
  icon: LabIcon;
  label: string;
  action: string;
  onClick: () => unknown;
  disabled?: boolean;
}): JSX.Element {
  return (
    <button
      className="jp-ModelDeploy-action jp-Button jp-mod-minimal"
      title={props.label}
      aria-label={props.label}
      data-action={props.action}
      disabled={props.disabled}
      onClick={event => {
        event.stopPropagation();
        void props.onClick();
      }}
    >
      <props.icon.react tag="span" elementSize="normal" />
    </button>
  );
}
