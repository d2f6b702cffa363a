import type { ObjectFieldTemplateProps } from '@rjsf/utils';
import React from 'react';

/** Groups that start expanded; every other group starts collapsed. */
const OPEN_GROUPS = new Set(['Instance', 'Model', 'Models']);

function hasErrors(node: unknown): boolean {
  if (!node || typeof node !== 'object') {
    return false;
  }
  for (const [key, value] of Object.entries(node)) {
    if (key === '__errors' ? Array.isArray(value) && value.length > 0 : hasErrors(value)) {
      return true;
    }
  }
  return false;
}

function GroupSection(props: {
  group: string;
  children: React.ReactNode;
  invalid: boolean;
}): JSX.Element {
  const [open, setOpen] = React.useState(OPEN_GROUPS.has(props.group));
  const expanded = open || props.invalid;
  return (
    <details
      className={`jp-ModelDeploy-group${props.invalid ? ' jp-mod-invalid' : ''}`}
      data-group={props.group}
      open={expanded}
    >
      <summary
        onClick={event => {
          event.preventDefault();
          setOpen(!expanded);
        }}
      >
        {props.group}
      </summary>
      <div className="jp-ModelDeploy-groupBody">{props.children}</div>
    </details>
  );
}

/**
 * The root object of the launch form: one collapsible section per option group, in the
 * server's group order (`x-group-order`, each property's `group`).
 */
export function makeGroupedTemplate(schemaGroups: string[]) {
  return function GroupedObjectTemplate(props: ObjectFieldTemplateProps): JSX.Element {
    const byGroup = new Map<string, ObjectFieldTemplateProps['properties']>();
    const hidden: React.ReactNode[] = [];
    for (const prop of props.properties) {
      if (prop.hidden) {
        hidden.push(prop.content);
        continue;
      }
      const group: string = (props.schema.properties?.[prop.name] as any)?.group ?? 'General';
      if (!byGroup.has(group)) {
        byGroup.set(group, []);
      }
      byGroup.get(group)!.push(prop);
    }
    const errors = (props.errorSchema ?? {}) as Record<string, unknown>;
    const groups = [...schemaGroups, ...[...byGroup.keys()].filter(g => !schemaGroups.includes(g))];
    return (
      <div className="jp-ModelDeploy-groups">
        {hidden}
        {groups
          .filter(group => byGroup.has(group))
          .map(group => {
            const fields = byGroup.get(group)!;
            return (
              <GroupSection key={group} group={group} invalid={fields.some(f => hasErrors(errors[f.name]))}>
                {fields.map(f => f.content)}
              </GroupSection>
            );
          })}
      </div>
    );
  };
}
