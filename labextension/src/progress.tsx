import React from 'react';

import { ILoadProgress } from './api';
import { formatBytes, formatDuration } from './format';

/** A loading deployment's phase as a progress bar: determinate when the phase has a percentage. */
export function LoadBar(props: { progress: ILoadProgress }): JSX.Element {
  const p = props.progress;
  const known = p.percent !== null && p.percent !== undefined;
  const bytes =
    p.bytes_done !== null
      ? ` ${formatBytes(p.bytes_done)}${p.bytes_total ? ` of ${formatBytes(p.bytes_total)}` : ''}` +
        (p.rate_bytes_per_s ? ` at ${formatBytes(p.rate_bytes_per_s)}/s` : '')
      : '';
  const done = p.phases.map(x => `${x.phase}: ${x.elapsed_s.toFixed(1)} s`).join('\n');
  return (
    <div className="jp-ModelDeploy-progress" data-phase={p.phase} title={done || undefined}>
      <div className="jp-ModelDeploy-progressLabel">
        <span className="jp-ModelDeploy-progressPhase">{p.phase}</span>
        {known && <span> {Math.round(p.percent as number)}%</span>}
        <span>{bytes}</span>
        <span className="jp-ModelDeploy-progressTime"> {formatDuration(p.elapsed_s)}</span>
      </div>
      <div
        className={`jp-ModelDeploy-bar jp-ModelDeploy-progressTrack${known ? '' : ' jp-mod-indeterminate'}`}
        role="progressbar"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={known ? Math.round(p.percent as number) : undefined}
        aria-label={p.phase}
      >
        <span className="jp-ModelDeploy-barFill" style={known ? { width: `${p.percent}%` } : undefined} />
      </div>
    </div>
  );
}
