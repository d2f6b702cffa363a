import React from 'react';

import { IFitReport } from './api';
import { formatBytes } from './format';

/** The fit check under the launch form: a bar of host RAM needed against free, the server's message, the parts. */
export function FitLine(props: { fit: IFitReport; force: boolean; onForce: (force: boolean) => void }): JSX.Element {
  const { fit } = props;
  const state = fit.fits === null ? 'unknown' : fit.fits ? 'fits' : 'short';
  const usable = Math.max(0, fit.free.host_bytes - fit.free.reserved_host_bytes);
  const share = usable > 0 ? Math.min(1, fit.estimate.host_bytes / usable) : 1;
  const parts = fit.estimate.parts.map(p => `${p.where} ${formatBytes(p.bytes)}: ${p.what}`).join('\n');
  return (
    <div className={`jp-ModelDeploy-fit jp-mod-${state}`} role="status" title={parts}>
      <div className="jp-ModelDeploy-fitHead">
        <span className="jp-ModelDeploy-fitLabel">Memory</span>
        {fit.estimate.known && (
          <span className="jp-ModelDeploy-bar jp-ModelDeploy-fitBar" aria-hidden="true">
            <span className="jp-ModelDeploy-barFill" style={{ width: `${Math.round(share * 100)}%` }} />
          </span>
        )}
      </div>
      <div className="jp-ModelDeploy-fitMessage">{fit.message}</div>
      {fit.fits === false && (
        <label className="jp-ModelDeploy-fitForce">
          <input type="checkbox" checked={props.force} onChange={event => props.onForce(event.target.checked)} />
          Launch even though it does not fit
        </label>
      )}
    </div>
  );
}
