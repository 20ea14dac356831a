// Chunk GC (DESIGN 8): mark from every ref and channel, sweep chunks and manifests nobody
// references, never touching what in-flight pushes hold leases on or anything younger than
// the grace period. Also what crashed writers leave: the driver's temp files older than the
// grace, and push leases past their expiry (issue 10 item 24). Packs are marked from the chunk
// maps of the remaining versions; `repack` rewrites packs that are mostly dead (PACKS.md).
import { type Digest, digestHex } from './digest.js';
import { KkError } from './errors.js';
import { CHUNKMAPS_PREFIX, type ChunkMap, type ChunkMapEntry, DEFAULT_PACK_TARGET, PACKS_PREFIX, PackWriter, packKey } from './pack.js';
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
  /**
   * Rewrite packs whose live bytes fell below this fraction of their size (`kk gc --repack`,
   * 0.5 when given as true): their live chunks go into new packs, the versions that used them
   * get new chunk maps; the old packs go in a later GC. Not with dryRun.
   */
  repack?: boolean | number;
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
  packsKept: number;
  packsDeleted: number;
  /** Unreferenced packs kept: younger than the grace period, or holding a chunk a push leased. */
  packsProtected: number;
  chunkMapsDeleted: number;
  /** With repack: packs rewritten, packs written, versions given a new chunk map. */
  packsRepacked: number;
  packsWritten: number;
  versionsRemapped: number;
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
    const chunkMaps = new Map<Digest, { project: string; app: string; version: string }[]>();
    let versions = 0;
    for (const project of await store.listProjects()) {
      for (const app of await store.listApps(project)) {
        for (const v of await store.listVersions(project, app)) {
          manifests.add(v.manifest);
          if (v.chunkMap) chunkMaps.set(v.chunkMap, [...(chunkMaps.get(v.chunkMap) ?? []), { project, app, version: v.version }]);
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
    const livePacks = new Map<Digest, number>();
    const liveMaps = new Map<Digest, ChunkMap>();
    // Live bytes of a pack: each stored object (a chunk object or a frame) counted once, however
    // many versions or frame members name it.
    const counted = new Set<string>();
    await forEachLimit(chunkMaps.keys(), 8, async (d) => {
      const map = await store.getChunkMap(d);
      liveMaps.set(d, map);
      for (const e of map.entries()) {
        const at = `${e.pack}@${e.offset}`;
        if (counted.has(at)) continue;
        counted.add(at);
        livePacks.set(e.pack, (livePacks.get(e.pack) ?? 0) + e.length);
      }
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
    // Chunk maps no version names go, unless young or naming a chunk a push leased (that push
    // found packed chunks through it: their packs stay too).
    // A push writes a pack's chunk map before the pack: anything written after this listing
    // began is young to this run whatever the grace period.
    const packCutoff = Math.min(cutoff, Date.now());
    let chunkMapsDeleted = 0;
    const leasedPacks = new Set<Digest>();
    for await (const o of store.driver.list(CHUNKMAPS_PREFIX)) {
      const d = digestFromChunkKey(o.key);
      if (!d || liveMaps.has(d)) continue;
      let keep = o.mtime > packCutoff || leased.has(d);
      if (leased.size) {
        const map = await store.getChunkMap(d).catch(() => undefined);
        for (const e of map?.entries() ?? []) {
          if (leased.has(e.digest)) {
            leasedPacks.add(e.pack);
            keep = true;
          }
        }
      }
      if (keep) continue;
      doomed.push(o.key);
      chunkMapsDeleted++;
    }
    let packsKept = 0;
    let packsDeleted = 0;
    let packsProtected = 0;
    const packSizes = new Map<Digest, number>();
    for await (const o of store.driver.list(PACKS_PREFIX)) {
      const d = digestFromChunkKey(o.key);
      if (!d) continue;
      packSizes.set(d, o.size);
      if (livePacks.has(d)) packsKept++;
      else if (leasedPacks.has(d) || leased.has(d) || o.mtime > packCutoff) packsProtected++;
      else {
        doomed.push(o.key);
        packsDeleted++;
        bytesFreed += o.size;
      }
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
    const repacked =
      opts.repack && !opts.dryRun
        ? await repack(store, liveMaps, chunkMaps, livePacks, packSizes, opts.repack === true ? 0.5 : opts.repack)
        : { packsRepacked: 0, packsWritten: 0, versionsRemapped: 0 };
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
      packsKept,
      packsDeleted,
      packsProtected,
      chunkMapsDeleted,
      ...repacked,
      dryRun: !!opts.dryRun,
      durationMs: Math.round(performance.now() - t0),
    };
  } finally {
    await lock?.release();
  }
}

/**
 * Copy the live chunk objects of packs whose live bytes fell below `threshold` of their size
 * into new packs, then give every version that used them a chunk map pointing at the new
 * packs (its ref keeps its manifest). Nothing is deleted here: the old packs are unreferenced
 * afterwards and a later GC removes them, so pulls and pushes that still read the old chunk
 * maps keep working meanwhile.
 */
async function repack(
  store: Store,
  liveMaps: Map<Digest, ChunkMap>,
  versionsOf: Map<Digest, { project: string; app: string; version: string }[]>,
  liveBytes: Map<Digest, number>,
  sizes: Map<Digest, number>,
  threshold: number,
): Promise<{ packsRepacked: number; packsWritten: number; versionsRemapped: number }> {
  const sparse = new Set<Digest>();
  for (const [pack, live] of liveBytes) {
    const size = sizes.get(pack);
    if (size && live < size * threshold) sparse.add(pack);
  }
  if (sparse.size === 0) return { packsRepacked: 0, packsWritten: 0, versionsRemapped: 0 };
  const wanted = new Map<Digest, ChunkMapEntry>();
  for (const map of liveMaps.values()) for (const e of map.entries()) if (sparse.has(e.pack) && !wanted.has(e.digest)) wanted.set(e.digest, e);
  const writer = new PackWriter(store.config.packs?.target ?? DEFAULT_PACK_TARGET);
  const moved = new Map<Digest, ChunkMapEntry>();
  let packsWritten = 0;
  const flush = async (sealed: ReturnType<PackWriter['finish']>) => {
    if (!sealed) return;
    await store.putPack(sealed.digest, sealed.bytes);
    packsWritten++;
    for (const e of sealed.entries) moved.set(e.digest, e);
  };
  const byPack = new Map<Digest, ChunkMapEntry[]>();
  for (const e of wanted.values()) byPack.set(e.pack, [...(byPack.get(e.pack) ?? []), e]);
  for (const [pack, entries] of byPack) {
    const bytes = await store.driver.get(packKey(pack));
    if (!bytes) throw new KkError('NOT_FOUND', `pack ${pack} vanished during repack`, { hint: 'run kk gc again' });
    // A frame moves whole (its live members keep their place inside it), once.
    const frames = new Map<number, ChunkMapEntry[]>();
    for (const e of entries.sort((a, b) => a.offset - b.offset)) {
      if (bytes.length < e.offset + e.length) throw new KkError('CHUNK_CORRUPT', `pack ${pack} is shorter than its chunk map says`, { details: { digest: e.digest, pack } });
      const object = bytes.subarray(e.offset, e.offset + e.length);
      if (e.inner === undefined) await flush(writer.add(e.digest, object, e.size));
      else frames.set(e.offset, [...(frames.get(e.offset) ?? []), e]);
    }
    for (const [offset, members] of frames) {
      const object = bytes.subarray(offset, offset + members[0]!.length);
      await flush(writer.addFrame(object, members.map((m) => ({ digest: m.digest, size: m.size, inner: m.inner! }))));
    }
  }
  await flush(writer.finish());
  await store.flush();
  let versionsRemapped = 0;
  for (const [d, map] of liveMaps) {
    const entries = [...map.entries()];
    if (!entries.some((e) => sparse.has(e.pack))) continue;
    const { digest } = await store.putChunkMap(entries.map((e) => (sparse.has(e.pack) ? moved.get(e.digest)! : e)));
    await store.flush();
    for (const v of versionsOf.get(d) ?? []) {
      await store.replaceChunkMap(v.project, v.app, v.version, d, digest);
      versionsRemapped++;
    }
  }
  await store.flush();
  return { packsRepacked: sparse.size, packsWritten, versionsRemapped };
}
