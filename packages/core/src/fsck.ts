// Store check (issue 10 item 23): read every chunk and manifest, verify it against the digest it
// is stored under, and with `repair` move damaged objects out of the way (to quarantine/), so
// the store reports them missing instead of present: the next push of a version that needs them
// uploads them again, and pulls fail with NOT_FOUND naming them instead of CHUNK_CORRUPT.
// Packs are checked whole (their name is the SHA-256 of their bytes) and, when damaged, chunk by
// chunk through every chunk map, so the report names the damaged chunks; repair quarantines the
// pack and a re-push uploads the chunks it held (loose).
import type { Digest } from './digest.js';
import { CHUNKMAPS_PREFIX, type ChunkMapEntry, PACKS_PREFIX, decodeChunkMap, decodeFrame, frameMember } from './pack.js';
import type { Hasher } from './hash/pool.js';
import { acquireGcLock } from './locks.js';
import { decodeManifest, fileChunks } from './manifest.js';
import { type Store, digestFromChunkKey, forEachLimit } from './store.js';

/** What to do about damaged stored data; the CHUNK_CORRUPT hints of pull name it. */
export const FSCK_HINT = 'the store holds damaged data: run `kk fsck --store <store> --repair` to quarantine it, then push the version again from its build to restore it';

/** Where `repair` moves damaged objects: `quarantine/<original key>`, never read by kk again. */
export const QUARANTINE_PREFIX = 'quarantine/';

export interface FsckOptions {
  store: Store;
  hasher: Hasher;
  /** Quarantine damaged objects (takes the GC lock, so no push or GC runs meanwhile). Default false. */
  repair?: boolean;
  /** Objects read and verified at once. Default 8. */
  concurrency?: number;
}

export interface FsckDamage {
  /** `pack`: a chunk inside the pack at `key` (`digest` names the chunk, `pack` the pack). */
  kind: 'chunk' | 'manifest' | 'pack' | 'chunkmap';
  key: string;
  digest: Digest;
  pack?: Digest;
  reason: string;
  /** Where repair moved it; absent without --repair, or when a push still holds a lease on it. */
  quarantined?: string;
}

export interface FsckResult {
  chunksChecked: number;
  manifestsChecked: number;
  packsChecked: number;
  chunkMapsChecked: number;
  /** Stored bytes read. */
  bytesChecked: number;
  damaged: FsckDamage[];
  /** Damaged objects moved to quarantine/ by this run. */
  quarantined: number;
  /** Versions whose manifest is damaged or names a damaged chunk: push these again (at most 1000). */
  affected: { project: string; app: string; version: string }[];
  repair: boolean;
  durationMs: number;
}

const BATCH = 256;

export async function fsck(opts: FsckOptions): Promise<FsckResult> {
  const t0 = performance.now();
  const { store, hasher } = opts;
  const concurrency = opts.concurrency ?? 8;
  const max = store.config.chunking.max;
  // Repair deletes (FORBIDDEN on stores without deletion), under the GC lock: pushes wait for it.
  const pruner = opts.repair ? store.pruner : undefined;
  const lock = opts.repair ? await acquireGcLock(store) : undefined;
  try {
    const damaged: FsckDamage[] = [];
    let chunksChecked = 0;
    let manifestsChecked = 0;
    let bytesChecked = 0;

    const checkChunk = async (key: string, digest: Digest) => {
      const obj = await store.driver.get(key);
      if (!obj) return; // deleted meanwhile
      chunksChecked++;
      bytesChecked += obj.length;
      let reason: string | undefined;
      if (obj.length < 1 || obj[0]! > 1) reason = obj.length ? `unknown encoding header ${obj[0]}` : 'empty object';
      else {
        const r = await hasher.decodeChunk(obj, digest, undefined, max);
        if (!r.ok) reason = r.reason;
      }
      if (reason) damaged.push({ kind: 'chunk', key, digest, reason });
    };
    const checkManifest = async (key: string, digest: Digest) => {
      const bytes = await store.driver.get(key);
      if (!bytes) return;
      manifestsChecked++;
      bytesChecked += bytes.length;
      try {
        decodeManifest(bytes, digest);
      } catch (err) {
        damaged.push({ kind: 'manifest', key, digest, reason: err instanceof Error ? err.message : String(err) });
      }
    };
    // Chunk maps first: they say which chunks each pack holds.
    let chunkMapsChecked = 0;
    let packsChecked = 0;
    const inPack = new Map<Digest, Map<string, ChunkMapEntry>>();
    const checkChunkMap = async (key: string, digest: Digest) => {
      const bytes = await store.driver.get(key);
      if (!bytes) return;
      chunkMapsChecked++;
      bytesChecked += bytes.length;
      try {
        for (const e of decodeChunkMap(bytes, digest).entries()) {
          let m = inPack.get(e.pack);
          if (!m) inPack.set(e.pack, (m = new Map()));
          m.set(`${e.digest}@${e.offset}+${e.inner ?? ''}`, e);
        }
      } catch (err) {
        damaged.push({ kind: 'chunkmap', key, digest, reason: err instanceof Error ? err.message : String(err) });
      }
    };
    const checkPack = async (key: string, digest: Digest) => {
      const bytes = await store.driver.get(key);
      if (!bytes) return;
      packsChecked++;
      bytesChecked += bytes.length;
      // The pack hashed in the pool as one raw object (a raw object's digest is its payload's).
      const whole = await hasher.decodeChunk(Buffer.concat([Buffer.from([0]), bytes]), digest, bytes.length, bytes.length);
      const entries = [...(inPack.get(digest)?.values() ?? [])];
      chunksChecked += entries.length;
      if (whole.ok) return;
      let named = 0;
      // A frame is decoded once for all its members; a frame that does not decode damages each.
      const frames = new Map<number, Promise<Buffer | string>>();
      const objectOf = async (e: ChunkMapEntry): Promise<Buffer | string> => {
        const obj = bytes.subarray(e.offset, e.offset + e.length);
        if (obj.length !== e.length) return 'the pack is shorter than its chunk map says';
        if (e.inner === undefined) return obj;
        let frame = frames.get(e.offset);
        if (!frame) frames.set(e.offset, (frame = decodeFrame(obj).catch((err: unknown) => `its frame at offset ${e.offset} does not decode (${(err as Error)?.message ?? err})`)));
        const raw = await frame;
        if (typeof raw === 'string') return raw;
        return frameMember(raw, e) ?? `its frame at offset ${e.offset} is shorter than the chunk map says`;
      };
      for (const e of entries) {
        const obj = await objectOf(e);
        const r = typeof obj !== 'string' ? await hasher.decodeChunk(obj, e.digest, e.size, max) : { ok: false as const, reason: obj };
        if (!r.ok) {
          damaged.push({ kind: 'pack', key, digest: e.digest, pack: digest, reason: `chunk ${e.digest} in pack ${digest}: ${r.reason}` });
          named++;
        }
      }
      if (!named) damaged.push({ kind: 'pack', key, digest, pack: digest, reason: `pack ${digest} does not match its name (no chunk map names a damaged chunk in it)` });
    };
    for (const [prefix, check] of [
      ['chunks/', checkChunk],
      ['manifests/', checkManifest],
      [CHUNKMAPS_PREFIX, checkChunkMap],
      [PACKS_PREFIX, checkPack],
    ] as const) {
      // Streamed in batches: memory holds one batch of keys, not the store's listing.
      let batch: { key: string; digest: Digest }[] = [];
      const run = async () => {
        await forEachLimit(batch, concurrency, (o) => check(o.key, o.digest));
        batch = [];
      };
      for await (const o of store.driver.list(prefix)) {
        const digest = digestFromChunkKey(o.key);
        if (!digest) continue;
        batch.push({ key: o.key, digest });
        if (batch.length >= BATCH) await run();
      }
      await run();
    }

    let quarantined = 0;
    if (opts.repair) {
      const moved = new Map<string, string>();
      for (const d of damaged) {
        // A push that holds a lease counted on this object being present: leave it for a later run.
        if (lock!.leasedChunks.has(d.digest)) continue;
        if (moved.has(d.key)) {
          d.quarantined = moved.get(d.key);
          continue;
        }
        const bytes = await store.driver.get(d.key);
        if (!bytes) continue;
        const to = `${QUARANTINE_PREFIX}${d.key}`;
        await store.writer.put(to, bytes);
        await pruner!.delete(d.key);
        d.quarantined = to;
        moved.set(d.key, to);
        quarantined++;
      }
      await store.flush();
    }

    const affected = damaged.length ? await affectedVersions(store, damaged) : [];
    return {
      chunksChecked,
      manifestsChecked,
      packsChecked,
      chunkMapsChecked,
      bytesChecked,
      damaged,
      quarantined,
      affected,
      repair: !!opts.repair,
      durationMs: Math.round(performance.now() - t0),
    };
  } finally {
    await lock?.release();
  }
}

/** The versions that need a damaged object (their manifest, or a chunk of it). */
async function affectedVersions(store: Store, damaged: FsckDamage[]): Promise<FsckResult['affected']> {
  const bad = new Set<string>(damaged.map((d) => d.digest));
  const out: FsckResult['affected'] = [];
  for (const project of await store.listProjects()) {
    for (const app of await store.listApps(project)) {
      for (const v of await store.listVersions(project, app)) {
        if (out.length >= 1000) return out;
        let hit = bad.has(v.manifest);
        if (!hit) {
          try {
            const m = await store.getManifest(v.manifest);
            hit = m.files.some((f) => fileChunks(f).some(([c]) => bad.has(c)));
          } catch {
            // Quarantined or unreadable: that version needs its manifest again.
            hit = true;
          }
        }
        if (hit) out.push({ project, app, version: v.version });
      }
    }
  }
  return out;
}
