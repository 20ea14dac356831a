// Relative manifest paths (DESIGN 4): `/`-separated, normalized, never escaping their root.
import { KkError } from './errors.js';

/** Throws UNSAFE_PATH unless `p` is a normalized relative path. */
export function assertSafePath(p: unknown): asserts p is string {
  const reason = unsafeReason(p);
  if (reason) {
    throw new KkError('UNSAFE_PATH', `unsafe path ${JSON.stringify(p)}: ${reason}`, {
      details: { path: p },
      hint: 'the manifest or source tree is not trustworthy; nothing was written',
    });
  }
}

function unsafeReason(p: unknown): string | undefined {
  if (typeof p !== 'string') return 'not a string';
  if (p.length === 0) return 'empty';
  if (Buffer.byteLength(p) > 4095) return 'longer than 4095 bytes (PATH_MAX)';
  if (p.includes('\0')) return 'contains NUL';
  if (p.includes('\\')) return 'contains a backslash';
  if (p.startsWith('/')) return 'absolute';
  for (const seg of p.split('/')) {
    if (seg === '') return 'has an empty segment';
    if (seg === '.' || seg === '..') return `has a "${seg}" segment`;
    if (Buffer.byteLength(seg) > 255) return 'has a segment longer than 255 bytes';
  }
  return undefined;
}

/** Byte-wise UTF-8 order, the manifest's sort order on every machine. */
export function comparePaths(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Parent directories of a relative path, outermost first: `a/b/c` -> [`a`, `a/b`]. */
export function parentsOf(p: string): string[] {
  const parts = p.split('/');
  const out: string[] = [];
  for (let i = 1; i < parts.length; i++) out.push(parts.slice(0, i).join('/'));
  return out;
}
