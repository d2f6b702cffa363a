/** "12 s", "3 min 4 s", "2 h 5 min", "1 d 3 h": as the widgets and the CLI write them (formats.py). */
export function formatDuration(seconds: number): string {
  if (!isFinite(seconds) || seconds < 0) {
    return '';
  }
  if (seconds < 60) {
    return `${Math.round(seconds)} s`;
  }
  const whole = Math.floor(seconds);
  if (whole < 3600) {
    return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  }
  if (whole < 86400) {
    return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
  }
  return `${Math.floor(whole / 86400)} d ${Math.floor((whole % 86400) / 3600)} h`;
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

/** "512 MiB", "12.3 GiB": memory sizes as the widgets and the CLI write them (formats.py). */
export function formatBytes(size: number): string {
  const mib = size / (1024 * 1024);
  return mib >= 10 * 1024 ? `${(mib / 1024).toFixed(1)} GiB` : `${Math.round(mib)} MiB`;
}
