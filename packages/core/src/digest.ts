// Content addresses: `sha256:<64 hex>` of the uncompressed bytes (DESIGN 2).
import { createHash } from 'node:crypto';
import { KkError } from './errors.js';

export type Digest = `sha256:${string}`;

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

export function isDigest(value: unknown): value is Digest {
  return typeof value === 'string' && DIGEST_RE.test(value);
}

export function assertDigest(value: unknown, what = 'digest'): asserts value is Digest {
  if (!isDigest(value)) {
    throw new KkError('INVALID_NAME', `invalid ${what} ${JSON.stringify(value)}: expected sha256:<64 lower-case hex>`);
  }
}

/** Hex part of a digest. */
export function digestHex(d: Digest): string {
  return d.slice(7);
}

/** Hash small data (manifests, refs) in-line; chunk and file data go through the pool. */
export function sha256Digest(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}
