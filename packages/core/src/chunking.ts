// Chunking parameters (DESIGN 2). Fixed per store in kk-store.json: dedup across versions and
// machines depends on every kk computing identical boundaries from them.
import { KkError } from './errors.js';

export interface ChunkingParams {
  /** FastCDC with a 32-bit gear hash and normalized chunking (level 2). */
  algorithm: 'fastcdc-gear32/1';
  min: number;
  avg: number;
  max: number;
  /** Seed of the gear table; the table is derived from it with SHA-256. */
  seed: string;
}

export const DEFAULT_AVG_CHUNK = 512 * 1024;

/** Parameters for a new store: min = avg/4, max = avg*4, avg a power of two. */
export function chunkingFor(avg = DEFAULT_AVG_CHUNK): ChunkingParams {
  const pow = 2 ** Math.round(Math.log2(Math.max(avg, 4096)));
  return { algorithm: 'fastcdc-gear32/1', min: pow / 4, avg: pow, max: pow * 4, seed: 'kk-gear-1' };
}

export function assertChunkingParams(c: unknown): asserts c is ChunkingParams {
  const o = c as ChunkingParams | undefined;
  const ok =
    !!o &&
    o.algorithm === 'fastcdc-gear32/1' &&
    Number.isSafeInteger(o.min) &&
    Number.isSafeInteger(o.avg) &&
    Number.isSafeInteger(o.max) &&
    o.min >= 64 &&
    o.min < o.avg &&
    o.avg < o.max &&
    o.max <= 64 * 1024 * 1024 &&
    (o.avg & (o.avg - 1)) === 0 &&
    typeof o.seed === 'string';
  if (!ok) throw new KkError('STORE_INVALID', `unsupported chunking parameters ${JSON.stringify(c)}`);
}

/** Parse sizes like `4MB`, `512KiB`, `1048576`. */
export function parseSize(value: string | number): number {
  if (typeof value === 'number') return value;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$/i.exec(value);
  if (!m) throw new KkError('CONFIG_INVALID', `cannot read size ${JSON.stringify(value)}: use e.g. 512KB, 4MB`);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.round(Number(m[1]) * unit);
}
