import { ReactWidget } from '@jupyterlab/apputils';
import { caretDownEmptyIcon, FormComponent } from '@jupyterlab/ui-components';
import type { ReadonlyJSONObject } from '@lumino/coreutils';
import type { IChangeEvent } from '@rjsf/core';
import { customizeValidator } from '@rjsf/validator-ajv8';
import React from 'react';

import { ApiError, IDeployment, IFitReport, JSONSchema, ModelDeployClient } from './api';
import { FitLine } from './fit';
import { makeGroupedTemplate } from './groups';
import { cleanFormData, prepareSchema, toErrorSchema, toFormValues, withOverrides } from './schema';

// `password` is an annotation for the form, not a format to check.
const validator = customizeValidator<ReadonlyJSONObject>({ customFormats: { password: () => true } });

export interface ILaunchFormOptions {
  client: ModelDeployClient;
  kinds: string[];
  /** A configuration to start from (clone, import); its `kind` picks the schema. */
  initial?: Record<string, unknown>;
  /** A note shown above the form (what a clone leaves out). */
  note?: string;
  /** Called once a deployment is created. */
  onLaunched: (record: IDeployment) => void;
  /** How the form's configuration is launched (default: a new deployment; a clone uses the server's clone). */
  submit?: (config: Record<string, unknown>) => Promise<IDeployment>;
}

interface IPrepared {
  kind: string;
  schema: JSONSchema;
  uiSchema: Record<string, any>;
  template: ReturnType<typeof makeGroupedTemplate>;
}

/** How the kind selector names each kind (the notebook form's `KIND_LABELS` say the same). */
const KIND_LABELS: Record<string, string> = {
  llamacpp: 'llama.cpp (GGUF models)',
  llm: 'vLLM (Hugging Face models)',
  embedding: 'Embeddings (sentence-transformers)'
};

const schemaCache = new Map<string, Promise<IPrepared>>();

function loadSchema(client: ModelDeployClient, kind: string): Promise<IPrepared> {
  let prepared = schemaCache.get(kind);
  if (!prepared) {
    prepared = client.schema(kind).then(raw => {
      const { schema, uiSchema, groups } = prepareSchema(raw);
      return { kind, schema, uiSchema, template: makeGroupedTemplate(groups) };
    });
    prepared.catch(() => schemaCache.delete(kind));
    schemaCache.set(kind, prepared);
  }
  return prepared;
}

function newName(kind: string): string {
  return `${kind}-${Math.random().toString(16).slice(2, 6)}`;
}

function LaunchForm(props: ILaunchFormOptions & { onTitle: (title: string) => void }): JSX.Element {
  const initialKind = String(props.initial?.kind ?? props.kinds[0] ?? 'llamacpp');
  const [kind, setKind] = React.useState(initialKind);
  const [prepared, setPrepared] = React.useState<IPrepared | null>(null);
  const [formData, setFormData] = React.useState<Record<string, unknown>>(
    props.initial?.name ? { ...props.initial } : { ...props.initial, name: newName(initialKind) }
  );
  const [extraErrors, setExtraErrors] = React.useState<Record<string, any> | undefined>();
  const [message, setMessage] = React.useState<{ kind: 'error' | 'info'; text: string } | null>(
    props.note ? { kind: 'info', text: props.note } : null
  );
  const [busy, setBusy] = React.useState(false);
  const [fit, setFit] = React.useState<IFitReport | null>(null);
  const [force, setForce] = React.useState(false);
  const fileInput = React.useRef<HTMLInputElement>(null);
  const uiSchema = React.useMemo(
    () =>
      prepared && {
        ...withOverrides(prepared.uiSchema, prepared.schema, formData),
        'ui:ObjectFieldTemplate': prepared.template
      },
    [prepared, formData]
  );

  React.useEffect(() => {
    let current = true;
    setPrepared(null);
    loadSchema(props.client, kind)
      .then(p => {
        if (current) {
          setFormData(data => toFormValues(data, p.schema));
          setPrepared(p);
        }
      })
      .catch(err => current && setMessage({ kind: 'error', text: `Cannot load the form for "${kind}": ${err.message}` }));
    return () => {
      current = false;
    };
  }, [kind]);

  // The fit check, live: the server estimates the memory as options change (debounced).
  React.useEffect(() => {
    if (!prepared || prepared.kind !== kind) {
      return;
    }
    let current = true;
    const timer = window.setTimeout(() => {
      props.client
        .validate({ ...cleanFormData(formData, prepared.schema), kind })
        .then(answer => current && setFit(answer.fit ?? null))
        .catch(() => current && setFit(null));
    }, 400);
    return () => {
      current = false;
      window.clearTimeout(timer);
    };
  }, [formData, kind, prepared]);

  React.useEffect(() => {
    props.onTitle(`Launch: ${String(formData.name ?? kind)}`);
  }, [formData.name, kind]);

  const changeKind = (next: string) => {
    setExtraErrors(undefined);
    setMessage(null);
    const generated = typeof formData.name === 'string' && formData.name.startsWith(`${kind}-`);
    setFormData({ name: !formData.name || generated ? newName(next) : formData.name });
    setKind(next);
  };

  const importFile = async (file: File) => {
    setExtraErrors(undefined);
    let data: unknown;
    try {
      data = JSON.parse(await file.text());
    } catch (err) {
      setMessage({ kind: 'error', text: `${file.name} is not valid JSON: ${(err as Error).message}` });
      return;
    }
    if (!data || typeof data !== 'object' || Array.isArray(data)) {
      setMessage({ kind: 'error', text: `${file.name} does not hold a configuration object` });
      return;
    }
    const config = data as Record<string, unknown>;
    const importedKind = String(config.kind ?? kind);
    if (!props.kinds.includes(importedKind)) {
      setMessage({ kind: 'error', text: `${file.name}: unknown kind "${importedKind}" (allowed: ${props.kinds.join(', ')})` });
      return;
    }
    setFormData(prepared && prepared.kind === importedKind ? toFormValues({ ...config }, prepared.schema) : { ...config });
    setKind(importedKind);
    setMessage({ kind: 'info', text: `Imported ${file.name}: review the options, then launch.` });
  };

  const launch = async () => {
    setBusy(true);
    setMessage(null);
    setExtraErrors(undefined);
    const config = { ...cleanFormData(formData, prepared?.schema), kind };
    try {
      // The server's checks first (model path, GGUF file, hub repo): a launch that cannot
      // start keeps the form open with the error at its field, and no "Launching" toast.
      await props.client.validate(config);
      const record = await (props.submit ?? (c => props.client.launch(c, force)))(config);
      props.onLaunched(record);
    } catch (err) {
      const error = err as ApiError;
      if (error.errors?.length && prepared) {
        setExtraErrors(toErrorSchema(error.errors, prepared.schema));
        setMessage({ kind: 'error', text: 'This configuration cannot start: fix the fields marked below.' });
      } else {
        setMessage({ kind: 'error', text: error.message });
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="jp-ModelDeploy-launch">
      <div className="jp-ModelDeploy-launchHeader">
        <label className="jp-ModelDeploy-kindField">
          Kind
          {/* Lab's own select styling (with its caret), so it reads as a choice, not a text box. */}
          <div className="jp-HTMLSelect jp-DefaultStyle jp-ModelDeploy-kindSelect">
            <select className="jp-ModelDeploy-kind" value={kind} onChange={event => changeKind(event.target.value)}>
              {props.kinds.map(k => (
                <option key={k} value={k}>
                  {KIND_LABELS[k] ?? k}
                </option>
              ))}
            </select>
            <caretDownEmptyIcon.react tag="span" stylesheet="select" right="4px" top="4px" />
          </div>
        </label>
        <button
          className="jp-mod-styled jp-ModelDeploy-import"
          onClick={() => fileInput.current?.click()}
          title="Fill the form from an exported configuration (JSON file)"
        >
          Import configuration…
        </button>
        <input
          ref={fileInput}
          type="file"
          accept=".json,application/json"
          className="jp-ModelDeploy-importFile"
          style={{ display: 'none' }}
          onChange={event => {
            const file = event.target.files?.[0];
            event.target.value = '';
            if (file) {
              void importFile(file);
            }
          }}
        />
        <button
          className="jp-mod-styled jp-mod-accept jp-ModelDeploy-launchButton"
          disabled={busy || prepared?.kind !== kind}
          onClick={() => void launch()}
        >
          {busy ? 'Checking…' : 'Launch'}
        </button>
      </div>
      {message && (
        <div className={`jp-ModelDeploy-message jp-mod-${message.kind}`} role={message.kind === 'error' ? 'alert' : 'status'}>
          {message.text}
        </div>
      )}
      {/* Only with the schema of the current kind: a form of another kind would add its own defaults. */}
      {prepared && prepared.kind === kind ? (
        <FormComponent
          key={kind}
          schema={prepared.schema}
          uiSchema={uiSchema!}
          formData={formData as any}
          onChange={(event: IChangeEvent<any>) => setFormData(event.formData)}
          validator={validator}
          extraErrors={extraErrors}
          noHtml5Validate
          showErrorList={false}
          idPrefix={`jp-ModelDeploy-${kind}`}
          showModifiedFromDefault={false}
        />
      ) : (
        !message && <div className="jp-ModelDeploy-loadingForm">Loading the form…</div>
      )}
      {/* Under the form, kept in view while scrolling: the fit follows every option. */}
      {fit && <FitLine fit={fit} force={force} onForce={setForce} />}
    </div>
  );
}

/** The launch form in a main-area tab. */
export class LaunchFormWidget extends ReactWidget {
  constructor(private options: ILaunchFormOptions) {
    super();
    this.addClass('jp-ModelDeploy-launchWidget');
    this.title.label = 'Launch deployment';
  }

  render(): JSX.Element {
    return <LaunchForm {...this.options} onTitle={title => (this.title.label = title)} />;
  }
}
