// Caches (DESIGN 9: the store is the only state). Manifests, creation times and refs are
// immutable, so they stay until evicted; the refs behind a version listing are reused only while
// the store still lists the same names, for at most `cacheTtlMs`, and writes through this server
// drop them at once.
import { LRUCache } from 'lru-cache';
import type { Digest, Manifest } from '@kk/core';

export interface CachedManifest {
  manifest: Manifest;
  /** The stored canonical bytes, served as is. */
  bytes: Buffer;
  /** Lazily built index from path to file entry. */
  byPath?: Map<string, Manifest['files'][number]>;
}

export class Caches {
  readonly manifests: LRUCache<Digest, CachedManifest>;
  readonly listings: LRUCache<string, object>;
  /** Creation times of projects and apps: written once, never change. */
  readonly created = new LRUCache<string, string>({ max: 200_000 });

  constructor(manifestBytes: number, ttlMs: number) {
    this.manifests = new LRUCache({ maxSize: Math.max(1, manifestBytes), sizeCalculation: (v) => Math.max(1, v.bytes.length * 3) });
    this.listings = new LRUCache({ max: 20_000, ttl: Math.max(1, ttlMs) });
  }

  /** Drop every listing a change to `project/app` can affect. */
  invalidateApp(project: string, app: string): void {
    this.listings.delete(`versions:${project}/${app}`);
  }
}
