import { IQuotas } from './api';

/** The four quotas in the order the panel shows them, with their short units. */
export const QUOTA_FIELDS: { key: keyof IQuotas; label: string; unit: string }[] = [
  { key: 'requests_per_minute', label: 'Requests per minute', unit: 'req/min' },
  { key: 'tokens_per_minute', label: 'Tokens per minute', unit: 'tok/min' },
  { key: 'max_in_flight', label: 'Requests in flight', unit: 'in flight' },
  { key: 'daily_tokens', label: 'Tokens per day (UTC)', unit: 'tok/day' }
];

const compact = new Intl.NumberFormat('en', { notation: 'compact', maximumFractionDigits: 1 });

/** ["60 req/min", "10K tok/min"]: the quotas a key has, shortest first written. */
export function quotaParts(quotas: Partial<IQuotas> | null): string[] {
  return QUOTA_FIELDS.filter(f => quotas?.[f.key] != null).map(f => `${compact.format(quotas![f.key] as number)} ${f.unit}`);
}

/** "60 req/min · 10K tok/min", or "no quotas". */
export function formatQuotas(quotas: Partial<IQuotas> | null): string {
  const parts = quotaParts(quotas);
  return parts.length ? parts.join(' · ') : 'no quotas';
}
