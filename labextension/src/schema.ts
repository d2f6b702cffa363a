import type { FieldTemplateProps, UiSchema } from '@rjsf/utils';
import React from 'react';

import type { IFieldError, JSONSchema } from './api';

/**
 * Turns the server's JSON Schema (pydantic's) into one react-jsonschema-form renders
 * well, and builds the uiSchema that hides constants and masks secrets.
 */
export function prepareSchema(raw: JSONSchema): { schema: JSONSchema; uiSchema: UiSchema; groups: string[] } {
  const schema: JSONSchema = JSON.parse(JSON.stringify(raw));
  delete schema['x-group-order'];
  const uiSchema: UiSchema = {};
  simplifyProperties(schema, uiSchema);
  for (const def of Object.values<JSONSchema>(schema.$defs ?? {})) {
    // pydantic titles a definition with its Python class name and describes it with the
    // docstring: neither is for users (the field holding it has its own title and help).
    delete def.title;
    delete def.description;
    simplifyProperties(def, {});
  }
  // Items of arrays that refer to a definition get their uiSchema here: rjsf does
  // not carry a uiSchema through $ref.
  for (const [name, prop] of Object.entries<JSONSchema>(schema.properties ?? {})) {
    const ref: string | undefined = prop.type === 'array' ? prop.items?.$ref : undefined;
    if (ref && ref.startsWith('#/$defs/')) {
      const def = schema.$defs?.[ref.slice('#/$defs/'.length)];
      if (def) {
        // Each item is headed by the list's own title in the singular ("Models" -> "Model").
        def.title = String(prop.title ?? name).replace(/s$/, '');
        const itemUi: UiSchema = {};
        simplifyProperties(def, itemUi);
        uiSchema[name] = { ...(uiSchema[name] ?? {}), items: itemUi };
      }
    }
  }
  const groups = groupOrder(raw);
  uiSchema['ui:order'] = fieldOrder(schema, groups);
  return { schema, uiSchema, groups };
}

function simplifyProperties(schema: JSONSchema, uiSchema: UiSchema): void {
  for (const [name, prop] of Object.entries<JSONSchema>(schema.properties ?? {})) {
    const anyOf: JSONSchema[] | undefined = prop.anyOf;
    if (anyOf && anyOf.length === 2 && anyOf.some(s => s.type === 'null')) {
      // "X or null" (an optional field): show X; an empty input means "unset".
      const inner = anyOf.find(s => s.type !== 'null') as JSONSchema;
      delete prop.anyOf;
      Object.assign(prop, inner, {
        title: prop.title,
        description: prop.description,
        default: prop.default ?? undefined
      });
      if (prop.default === undefined) {
        delete prop.default;
      }
    } else if (anyOf && listOrKeyword(anyOf) !== undefined) {
      // A keyword or a list of integers (gpus: "auto" or [0, 1]): one text box, "auto" shown once.
      const keyword = listOrKeyword(anyOf) as string;
      delete prop.anyOf;
      Object.assign(prop, { type: 'string', default: prop.default ?? keyword, [LIST_OR_KEYWORD]: keyword });
      if (Array.isArray(prop.default)) {
        prop.default = prop.default.join(',');
      }
      uiSchema[name] = { 'ui:placeholder': `${keyword}, or a list such as 0,1` };
    } else if (anyOf) {
      for (const option of anyOf) {
        option.title ??= optionTitle(option);
      }
      // A constant choice (gpus: "auto") needs only the selector, not an input too.
      uiSchema[name] = {
        anyOf: anyOf.map(option =>
          option.const !== undefined ? { 'ui:widget': 'hidden', 'ui:FieldTemplate': HiddenFieldTemplate } : {}
        )
      };
    }
    if (prop.const !== undefined || prop.readOnly) {
      uiSchema[name] = { 'ui:widget': 'hidden', 'ui:FieldTemplate': HiddenFieldTemplate };
    } else if (prop.format === 'password' || prop.writeOnly) {
      uiSchema[name] = { 'ui:widget': 'password', 'ui:options': { autocomplete: 'off' } };
    }
  }
}

/** Marks a field the form shows as text but the server takes as a keyword or a list of integers. */
export const LIST_OR_KEYWORD = 'x-list-or-keyword';

/** The keyword of an anyOf that is exactly one constant string and one array of integers. */
function listOrKeyword(anyOf: JSONSchema[]): string | undefined {
  const consts = anyOf.filter(o => typeof o.const === 'string');
  const arrays = anyOf.filter(o => o.type === 'array' && o.items?.type === 'integer');
  return consts.length === 1 && arrays.length === 1 && anyOf.length === 2 ? consts[0].const : undefined;
}

/** Form values for a configuration: keyword-or-list fields as text (`[0, 1]` becomes "0,1"). */
export function toFormValues(data: Record<string, unknown>, schema: JSONSchema): Record<string, unknown> {
  const result = { ...data };
  for (const [name, prop] of Object.entries<JSONSchema>(schema.properties ?? {})) {
    if (prop[LIST_OR_KEYWORD] !== undefined && Array.isArray(result[name])) {
      result[name] = (result[name] as unknown[]).join(',');
    }
  }
  return result;
}

/** Lab's field template shows a label even for hidden widgets: render only the input. */
function HiddenFieldTemplate(props: FieldTemplateProps): JSX.Element {
  return React.createElement('div', { style: { display: 'none' } }, props.children);
}

function optionTitle(option: JSONSchema): string {
  if (option.const !== undefined) {
    return String(option.const);
  }
  if (option.type === 'array') {
    return 'list';
  }
  return String(option.type ?? 'value');
}

/** The groups in the server's order, then any group it did not list. */
function groupOrder(raw: JSONSchema): string[] {
  const order: string[] = [...(raw['x-group-order'] ?? [])];
  for (const prop of Object.values<JSONSchema>(raw.properties ?? {})) {
    const group = prop.group ?? 'General';
    if (!order.includes(group)) {
      order.push(group);
    }
  }
  return order;
}

function fieldOrder(schema: JSONSchema, groups: string[]): string[] {
  const entries = Object.entries<JSONSchema>(schema.properties ?? {});
  const ordered: string[] = [];
  for (const group of groups) {
    for (const [name, prop] of entries) {
      if ((prop.group ?? 'General') === group) {
        ordered.push(name);
      }
    }
  }
  return ordered;
}

/**
 * The fields each field replaces while it holds a value, as the schema says (`overrides`: llama.cpp's
 * `cli_args` replaces every llama-server flag); the notebook form greys out the same fields.
 */
export function overriddenBy(schema: JSONSchema): Record<string, string[]> {
  const result: Record<string, string[]> = {};
  for (const [name, prop] of Object.entries<JSONSchema>(schema.properties ?? {})) {
    if (Array.isArray(prop.overrides)) {
      result[name] = prop.overrides.filter((n: unknown): n is string => typeof n === 'string' && n !== name);
    }
  }
  return result;
}

/** The uiSchema with the fields replaced by a set overriding field disabled. */
export function withOverrides(
  uiSchema: Record<string, any>,
  schema: JSONSchema,
  formData: Record<string, unknown>
): Record<string, any> {
  const result = { ...uiSchema };
  for (const [source, fields] of Object.entries(overriddenBy(schema))) {
    const value = formData[source];
    if (value === undefined || value === null || value === '') {
      continue;
    }
    for (const field of fields) {
      result[field] = { ...(result[field] ?? {}), 'ui:disabled': true };
    }
  }
  return result;
}

export function groupOf(schema: JSONSchema, field: string): string {
  return schema.properties?.[field]?.group ?? 'General';
}

/**
 * The server's field errors as rjsf `extraErrors`: "a.b" becomes {a: {b: {__errors}}};
 * errors that name no field of the form land on the root.
 */
export function toErrorSchema(errors: IFieldError[], schema: JSONSchema): Record<string, any> {
  const result: Record<string, any> = {};
  for (const error of errors) {
    const allowed = error.allowed?.length ? ` (allowed: ${error.allowed.map(a => JSON.stringify(a)).join(', ')})` : '';
    const message = error.message + allowed;
    const path = error.field && error.field !== '(root)' ? error.field.split('.') : [];
    const known = path.length > 0 && schema.properties && path[0] in schema.properties;
    let node = result;
    for (const part of known ? path : []) {
      node[part] ??= {};
      node = node[part];
    }
    node.__errors ??= [];
    node.__errors.push(known ? message : `${error.field}: ${message}`);
  }
  return result;
}

/**
 * The form's data without unset optional values, so the server applies its defaults; a
 * keyword-or-list field's text becomes the keyword or a list of integers ("0,1" is [0, 1]).
 */
export function cleanFormData(data: Record<string, unknown>, schema?: JSONSchema): Record<string, unknown> {
  const result: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(data)) {
    if (value === undefined || value === null) {
      continue;
    }
    const keyword = schema?.properties?.[key]?.[LIST_OR_KEYWORD];
    if (keyword !== undefined && typeof value === 'string') {
      const text = value.trim();
      const parts = text.replace(/^\[|\]$/g, '').split(',').map(p => p.trim()).filter(p => p);
      const numbers = parts.map(Number);
      // Anything else goes as typed: the server names the field and says why.
      result[key] = text === keyword || !text ? keyword : numbers.every(Number.isInteger) ? numbers : value;
      continue;
    }
    result[key] = value;
  }
  return result;
}
