// Small helpers shared by the bench scripts: child processes with wall-clock timing, statistics,
// directory sizes, a seeded PRNG and formatting.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Run a command to completion, capturing stdout and stderr. Resolves with the wall time in
 * seconds; rejects with the command's output when it exits non-zero (unless `allowFail`).
 */
export function exec(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out = [];
    const err = [];
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => err.push(d));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      const seconds = (performance.now() - t0) / 1000;
      const stdout = Buffer.concat(out).toString();
      const stderr = Buffer.concat(err).toString();
      if (code !== 0 && !opts.allowFail) {
        const tail = (stderr || stdout).trim().split('\n').slice(-15).join('\n');
        reject(new Error(`${cmd} ${args.join(' ')} failed (${signal ?? `exit ${code}`}):\n${tail}`));
        return;
      }
      resolve({ seconds, stdout, stderr, code });
    });
  });
}

/** Whether `bin` is on PATH (or an existing absolute path). */
export function have(bin) {
  if (bin.startsWith('/')) return spawnSync('test', ['-x', bin]).status === 0;
  return spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;
}

/** First line a command prints for its version, or undefined. */
export function versionOf(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0 && !r.stdout && !r.stderr) return undefined;
  return `${r.stdout || r.stderr}`.trim().split('\n')[0];
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Apparent size of every regular file under `path` (bytes), like `du -sb --apparent-size`. */
export function treeBytes(path) {
  let total = 0;
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return 0;
  }
  if (st.isFile()) return st.size;
  if (!st.isDirectory()) return 0;
  for (const name of readdirSync(path)) total += treeBytes(join(path, name));
  return total;
}

export function rmrf(...paths) {
  for (const p of paths) rmSync(p, { recursive: true, force: true, maxRetries: 3 });
}

/** A fast, seeded PRNG (mulberry32 over a SHA-256 of the seed): same seed, same sequence. */
export function prng(seed) {
  let a = createHash('sha256').update(String(seed)).digest().readUInt32LE(0);
  const next = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  next.int = (lo, hi) => lo + Math.floor(next() * (hi - lo + 1));
  return next;
}

/** Bytes from rsync --stats: sent + received, literal and matched data. */
export function parseRsyncStats(text) {
  const num = (label) => {
    const m = new RegExp(`${label}:\\s*([\\d,.]+)`).exec(text);
    return m ? Number(m[1].replace(/[,.]/g, '')) : undefined;
  };
  const sent = num('Total bytes sent');
  const received = num('Total bytes received');
  if (sent === undefined || received === undefined) throw new Error(`no byte counts in rsync --stats output:\n${text}`);
  return { sent, received, literal: num('Literal data'), matched: num('Matched data') };
}

export const fmtBytes = (n) => {
  if (n === undefined || n === null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`;
};

export const fmtS = (s) => (s === undefined || s === null ? '–' : s >= 100 ? s.toFixed(0) : s >= 10 ? s.toFixed(1) : s >= 1 ? s.toFixed(2) : s.toFixed(3));

export const round = (x, digits = 3) => (x === undefined || x === null ? x : +x.toFixed(digits));
