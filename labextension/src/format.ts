/** "12 s", "4 min", "2 h 5 min". */
export function formatDuration(seconds: number): string {
  if (!isFinite(seconds) || seconds < 0) {
    return '';
  }
  if (seconds < 60) {
    return `${Math.floor(seconds)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min`;
  }
  const hours = Math.floor(minutes / 60);
  return `${hours} h ${minutes % 60} min`;
}

/** The last part of a model path or repo id, which is what a list has room for. */
export function shortModel(model: string | null | undefined): string {
  if (!model) {
    return '';
  }
  const parts = model.split('/');
  return parts[parts.length - 1] || model;
}

export function formatTime(epochSeconds: number | null | undefined): string {
  return epochSeconds ? new Date(epochSeconds * 1000).toLocaleString() : '';
}
