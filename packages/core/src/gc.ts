// Chunk GC (DESIGN 8): mark from every ref and channel, sweep chunks and manifests nobody
// references, never touching what in-flight pushes hold leases on or anything younger than
// the grace period. Also what crashed writers leave: the driver's temp files older than the
// grace, and push leases past their expiry (issue 10 item 24).
import { type Digest, digestHex } from './digest.js';
import { fileChunks } from './manifest.js';
import { acquireGcLock } from './locks.js';
import { isPruneDriver } from './driver.js';
import { type ProgressCallback } from './progress.js';
import { type Store, digestFromChunkKey, forEachLimit, targetFromDeltaKey } from './store.js';

const LEASE_PREFIX = 'locks/push/';

export interface GcOptions {
  store: Store;
  dryRun?: boolean;
  /** Objects younger than this are never deleted. Default 1 hour. */
  graceMs?: number;
  onProgress?: ProgressCallback;
}

export interface GcResult {
  versions: number;
  manifestsKept: number;
  manifestsDeleted: number;
  chunksKept: number;
  chunksDeleted: number;
  bytesFreed: number;
  /** Unreferenced but kept: younger than the grace period or leased by a push. */
  chunksProtected: number;
  /** Delta objects whose chunk is gone. */
  deltasDeleted: number;
  /** Temp files of interrupted writes (older than the grace period) removed; their bytes count in bytesFreed. */
  tempFilesDeleted: number;
  /** Push leases past their expiry (their push died) removed. */
  leasesExpired: number;
  dryRun: boolean;
  durationMs: number;
}

export async function gc(opts: GcOptions): Promise<GcResult> {
  const t0 = performance.now();
  const { store } = opts;
  const grace = opts.graceMs ?? 3_600_000;
  const lock = opts.dryRun ? undefined : await acquireGcLock(store);
  try {
    const leased = lock?.leasedChunks ?? new Set<Digest>();
    // ---- mark ----
    const manifests = new Set<Digest>();
    let versions = 0;
    for (const project of await store.listProjects()) {
      for (const app of await store.listApps(project)) {
        for (const v of await store.listVersions(project, app)) {
          manifests.add(v.manifest);
          versions++;
        }
        for (const ch of await store.listChannels(project, app)) {
          const c = await store.getChannel(project, app, ch);
          if (c) manifests.add(c.manifest);
        }
      }
    }
    const live = new Set<string>();
    await forEachLimit(manifests, 8, async (d) => {
      const m = await store.getManifest(d);
      for (const f of m.files) for (const [c] of fileChunks(f)) live.add(digestHex(c));
    });
    opts.onProgress?.({ phase: 'gc', done: 0, total: 0, bytesDone: 0, bytesTotal: 0 });

    // ---- sweep ----
    const cutoff = Date.now() - grace;
    const liveManifestHex = new Set([...manifests].map(digestHex));
    let chunksKept = 0;
    let chunksDeleted = 0;
    let chunksProtected = 0;
    let bytesFreed = 0;
    let manifestsKept = 0;
    let manifestsDeleted = 0;
    const doomed: string[] = [];
    for await (const o of store.driver.list('chunks/')) {
      const d = digestFromChunkKey(o.key);
      if (!d) continue;
      if (live.has(digestHex(d))) chunksKept++;
      else if (leased.has(d) || o.mtime > cutoff) chunksProtected++;
      else {
        doomed.push(o.key);
        chunksDeleted++;
        bytesFreed += o.size;
      }
    }
    // Deltas live as long as the chunk they rebuild.
    let deltasDeleted = 0;
    for await (const o of store.driver.list('deltas/')) {
      const target = targetFromDeltaKey(o.key);
      if (!target || live.has(digestHex(target)) || leased.has(target) || o.mtime > cutoff) continue;
      doomed.push(o.key);
      deltasDeleted++;
      bytesFreed += o.size;
    }
    for await (const o of store.driver.list('manifests/')) {
      const d = digestFromChunkKey(o.key);
      if (!d) continue;
      if (liveManifestHex.has(digestHex(d)) || leased.has(d) || o.mtime > cutoff) manifestsKept++;
      else {
        doomed.push(o.key);
        manifestsDeleted++;
      }
    }
    // Leases past their expiry belong to pushes that died (a live push refreshes its lease).
    let leasesExpired = 0;
    const now = Date.now();
    for await (const o of store.driver.list(LEASE_PREFIX)) {
      const raw = await store.driver.get(o.key);
      if (!raw) continue;
      let expires: unknown;
      try {
        expires = (JSON.parse(raw.toString('utf8')) as { expires?: unknown }).expires;
      } catch {
        expires = undefined;
      }
      // An unreadable lease protects nothing; it goes once it is older than the grace period.
      const dead = typeof expires === 'number' ? expires < now : o.mtime < cutoff;
      if (!dead) continue;
      doomed.push(o.key);
      leasesExpired++;
    }
    if (!opts.dryRun) await forEachLimit(doomed, 16, (key) => store.pruner.delete(key));
    let tempFilesDeleted = 0;
    if (isPruneDriver(store.driver) && store.driver.sweepTemp) {
      const swept = await store.driver.sweepTemp({ olderThanMs: grace, dryRun: !!opts.dryRun });
      tempFilesDeleted = swept.files;
      bytesFreed += swept.bytes;
    }
    return {
      versions,
      manifestsKept,
      manifestsDeleted,
      chunksKept,
      chunksDeleted,
      bytesFreed,
      chunksProtected,
      deltasDeleted,
      tempFilesDeleted,
      leasesExpired,
      dryRun: !!opts.dryRun,
      durationMs: Math.round(performance.now() - t0),
    };
  } finally {
    await lock?.release();
  }
}
