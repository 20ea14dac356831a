// Human renderings shared by commands and the progress display, and the parsing of durations.
import { Errors } from '@oclif/core';
import { EXIT } from './exit-codes.js';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 -> "1.5 KiB". Binary units; three significant digits past 1 KiB. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 1024) return `${Math.max(0, Math.round(n || 0))} B`;
  let i = 0;
  let v = n;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${UNITS[i]}`;
}

/** Seconds -> "0.42s", "12s", "3m05s", "2h04m". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  if (seconds < 10) return `${seconds.toFixed(seconds < 1 ? 2 : 1)}s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** An ISO time plus how long ago it was: "2025-01-02T03:04:05.000Z (3m05s ago)". */
export function formatWhen(iso: string, now = Date.now()): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  return `${iso} (${formatDuration(Math.max(0, (now - t) / 1000))} ago)`;
}

/** `sha256:0123456789ab…` -> `sha256:0123456789ab` (enough to recognise, short enough to read). */
export function shortDigest(d: string): string {
  return d.startsWith('sha256:') ? d.slice(0, 19) : d;
}

export function plural(n: number, word: string, many = `${word}s`): string {
  return `${n} ${n === 1 ? word : many}`;
}

/** Rows of cells -> aligned columns separated by two spaces. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "0", "30s", "15m", "1h", "2d" -> milliseconds (a bare number is seconds); bad input is a usage error. */
export function parseDuration(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) throw new Errors.CLIError(`${flag} ${JSON.stringify(text)} is not a duration such as 0s, 30m, 1h or 2d`, { exit: EXIT.USAGE });
  return Math.round(Number(m[1]) * UNIT_MS[m[2] ?? 's']!);
}
