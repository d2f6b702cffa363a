import React from 'react';

import { ApiError, IDeployment, ModelDeployClient } from './api';
import { formatDuration, formatTime } from './format';
import { Reason } from './panel';
import { PollingWidget } from './polling';

/**
 * The latest value of each number in a metrics answer, with dotted names. A series
 * (a list of numbers, or of [time, value] pairs, or of {value}) counts as its last value.
 */
export function latestNumbers(data: unknown, prefix = '', depth = 0, out: [string, number][] = []): [string, number][] {
  if (depth > 4 || data === null || data === undefined) {
    return out;
  }
  if (typeof data === 'number') {
    out.push([prefix, data]);
  } else if (Array.isArray(data)) {
    const last = data[data.length - 1];
    if (typeof last === 'number') {
      out.push([prefix, last]);
    } else if (Array.isArray(last) && typeof last[last.length - 1] === 'number') {
      out.push([prefix, last[last.length - 1]]);
    } else if (last && typeof last === 'object') {
      latestNumbers(last, prefix, depth + 1, out);
    }
  } else if (typeof data === 'object') {
    for (const [key, value] of Object.entries(data as Record<string, unknown>)) {
      if (/(^|_)(at|time|timestamp|ts)$/.test(key)) {
        continue;
      }
      latestNumbers(value, prefix ? `${prefix}.${key}` : key, depth + 1, out);
    }
  }
  return out;
}

function formatNumber(value: number): string {
  if (Number.isInteger(value)) {
    return value.toLocaleString();
  }
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
}

/** A built-in live dashboard: status, endpoint and the latest metric values. */
export class DashboardWidget extends PollingWidget {
  constructor(
    private client: ModelDeployClient,
    private deployment: IDeployment
  ) {
    super(`jupyter-modeldeploy:dashboard:${deployment.id}`);
    this.addClass('jp-ModelDeploy-dashboard');
    this.title.label = `Dashboard: ${deployment.name}`;
    this.title.closable = true;
  }

  render(): JSX.Element {
    const d = this.deployment;
    return (
      <div className="jp-ModelDeploy-dashboardContent">
        <h2>{d.name}</h2>
        <table className="jp-ModelDeploy-facts">
          <tbody>
            <tr>
              <th>Status</th>
              <td data-field="status">
                <span className={`jp-ModelDeploy-status jp-mod-${d.status}`} data-status={d.status}>
                  <span className="jp-ModelDeploy-statusDot" aria-hidden="true" />
                  {d.status}
                </span>
                {d.serving && d.idle_for_s >= 1 && ` for ${formatDuration(d.idle_for_s)}`}
              </td>
            </tr>
            {d.status_reason && (
              <tr>
                <th>Reason</th>
                <td>
                  <Reason d={d} />
                </td>
              </tr>
            )}
            <tr>
              <th>Kind</th>
              <td>{d.kind}</td>
            </tr>
            <tr>
              <th>Model</th>
              <td>{d.model ?? d.models.map(m => m.name).join(', ')}</td>
            </tr>
            <tr>
              <th>Endpoint</th>
              <td>
                <code>{d.endpoint_url}</code>
              </td>
            </tr>
            <tr>
              <th>API base</th>
              <td>
                <code>{d.api_base}</code>
              </td>
            </tr>
            <tr>
              <th>Started</th>
              <td>{formatTime(d.started_at)}</td>
            </tr>
            <tr>
              <th>In flight</th>
              <td>{d.requests_in_flight}</td>
            </tr>
          </tbody>
        </table>
        <h3>Metrics</h3>
        {this.metricsNote ? (
          <div className="jp-ModelDeploy-empty">{this.metricsNote}</div>
        ) : (
          <div className="jp-ModelDeploy-metrics">
            {this.metrics.map(([name, value]) => (
              <div className="jp-ModelDeploy-metric" key={name} data-metric={name}>
                <div className="jp-ModelDeploy-metricValue">{formatNumber(value)}</div>
                <div className="jp-ModelDeploy-metricName">{name}</div>
              </div>
            ))}
          </div>
        )}
        {this.error && (
          <div className="jp-ModelDeploy-message jp-mod-error" role="alert">
            {this.error}
          </div>
        )}
      </div>
    );
  }

  protected async fetch(): Promise<void> {
    try {
      this.deployment = await this.client.deployment(this.deployment.id);
      this.error = null;
    } catch (err) {
      this.error = (err as Error).message;
    }
    if (this.metricsUnsupported) {
      this.update();
      return;
    }
    try {
      this.metrics = latestNumbers(await this.client.metrics(this.deployment.id));
      this.metricsNote = this.metrics.length ? null : 'No metrics yet.';
    } catch (err) {
      this.metrics = [];
      // Asking again every 2 s would only fill the console with 404s.
      this.metricsUnsupported = err instanceof ApiError && err.status === 404;
      this.metricsNote =
        err instanceof ApiError && err.status === 404
          ? 'This server does not report metrics for this deployment.'
          : `Metrics unavailable: ${(err as Error).message}`;
    }
    this.update();
  }

  private metrics: [string, number][] = [];
  private metricsUnsupported = false;
  private metricsNote: string | null = 'Loading…';
  private error: string | null = null;
}
