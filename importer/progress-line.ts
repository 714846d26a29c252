/** Pure rendering of one progress line for the terminal or a plain log. */

import { formatBytes } from '../src/quantity.js';
import type { ProgressSnapshot } from './progress.js';

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function renderProgressLine(snapshot: ProgressSnapshot, rate: number, etaSeconds: number | undefined, barWidth = 0): string {
  const percent = `${snapshot.percent.toFixed(1).padStart(5)}%`;
  const amount =
    snapshot.total !== undefined
      ? `${formatBytes(snapshot.bytes)} / ${formatBytes(snapshot.total)}`
      : snapshot.bytes > 0
        ? formatBytes(snapshot.bytes)
        : '';
  const speed = rate > 0 ? `${formatBytes(rate)}/s` : '';
  const eta = etaSeconds !== undefined ? `ETA ${formatDuration(etaSeconds)}` : '';
  let bar = '';
  if (barWidth > 0) {
    const filled = Math.round((snapshot.percent / 100) * barWidth);
    bar = `[${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}] `;
  }
  return [`${snapshot.phase.padEnd(8)} ${bar}${percent}`, amount, speed, eta].filter((p) => p !== '').join('  ');
}
