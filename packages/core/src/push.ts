// Push (DESIGN 6): scan, hash + chunk in the pool (stat cache first), upload only the chunks
// the store lacks, then write the manifest and, last, the ref.
import { resolve, join } from 'node:path';
import type { Digest } from './digest.js';
import { KkError } from './errors.js';
import { BytesCounter, type ChunkSource, type DeltaRequest, type Hasher } from './hash/pool.js';
import { type ChunkRef, type FileEntry, MANIFEST_FORMAT, type Manifest, encodeManifest, fileChunks, sameContent } from './manifest.js';
import { assertAppName, assertProjectName, assertVersionName } from './names.js';
import { type ScanOptions, type ScannedFile, scanTree } from './scan.js';
import { StatCache, type StatEntry } from './statcache.js';
import { type Store, batches, defaultActor, forEachLimit } from './store.js';
import { acquirePushLease, type LockTimings } from './locks.js';
import { type ProgressCallback, phaseReporter } from './progress.js';
import { defaultStateRoot, pathKey } from './state.js';
import { type RetentionResult, applyRetention } from './retention.js';
import { type ChunkMapEntry, PackAssembler, type SealedPack, packKey, packsChunk } from './pack.js';
import type { CompressionPolicy } from './hash/codec.js';

export interface PushOptions extends ScanOptions {
  store: Store;
  hasher: Hasher;
  project: string;
  app: string;
  version: string;
  /** The build directory to publish. */
  dir: string;
  builder?: string;
  gitCommit?: string;
  meta?: Record<string, string>;
  /** Parallel chunk uploads. Default 8. */
  concurrency?: number;
  /** Stat cache file; default under the state dir keyed by `dir`. `false` disables it. */
  statCache?: string | false;
  stateDir?: string;
  /** Store deltas of new chunks against the previous version (transfer hints). Default true. */
  deltas?: boolean;
  /** Publish a build with no files (refused otherwise: pulling it would empty every deploy directory). */
  allowEmpty?: boolean;
  /** After the push, keep only the newest N versions of this app. */
  retainVersions?: number;
  by?: string;
  onProgress?: ProgressCallback;
  locks?: LockTimings;
}

export interface PushResult {
  project: string;
  app: string;
  version: string;
  manifest: Digest;
  /** `created`, or `unchanged` when the same content was already pushed under this version. */
  status: 'created' | 'unchanged';
  files: number;
  dirs: number;
  /** Logical size of the version. */
  bytes: number;
  filesHashed: number;
  bytesHashed: number;
  /** Files whose hash came from the stat cache. */
  filesCached: number;
  chunks: number;
  chunksUploaded: number;
  /** Uncompressed bytes of the uploaded chunks. */
  bytesUploaded: number;
  /** Bytes actually sent to the store (after compression). */
  bytesUploadedStored: number;
  /** Packs written (their chunks count in chunksUploaded), and chunks found in packs of earlier versions. */
  packsUploaded: number;
  chunksReusedFromPacks: number;
  /** Deltas stored against the previous version's chunks, and their bytes. */
  deltas: number;
  bytesDeltas: number;
  retention?: RetentionResult;
  durationMs: number;
}

const SMALL_FILE = 1024 * 1024;
/** From this size a file is chunked by all workers at once (segments stitched together). */
const LARGE_FILE = 128 * 1024 * 1024;
const BATCH_BYTES = 8 * 1024 * 1024;
const BATCH_FILES = 256;
/** Chunk objects come back from the pool in smaller batches: they are held until stored. */
const UPLOAD_BATCH_BYTES = 2 * 1024 * 1024;
/** Encoded bytes waiting for or in upload at once. */
const UPLOAD_BUDGET = 16 * 1024 * 1024;
/** Chunks bound for a frame leave the pool raw. */
const RAW: CompressionPolicy = { algorithm: 'none', level: 0, minSaving: 0 };

export async function push(opts: PushOptions): Promise<PushResult> {
  const t0 = performance.now();
  assertProjectName(opts.project);
  assertAppName(opts.app);
  assertVersionName(opts.version);
  const { store, hasher } = opts;
  const dir = resolve(opts.dir);
  const chunking = store.config.chunking;

  opts.onProgress?.({ phase: 'scan', done: 0, total: 0, bytesDone: 0, bytesTotal: 0 });
  const scan = await scanTree(dir, opts);
  if (scan.files.length === 0 && !opts.allowEmpty) {
    throw new KkError('SOURCE_INVALID', `${dir} holds no files${scan.ignored ? ` (${scan.ignored} ignored)` : ''}: pulling such a version would empty every deploy directory`, {
      hint: 'check the build output directory; pass --allow-empty to publish an empty version on purpose',
      details: { dir, ignored: scan.ignored },
    });
  }

  // ---- hash (stat cache first) ----
  const cacheFile =
    opts.statCache === false ? undefined : (opts.statCache ?? join(opts.stateDir ?? defaultStateRoot(), 'push', `${pathKey(dir)}.json`));
  const chunkingId = `${chunking.algorithm}/${chunking.min}/${chunking.avg}/${chunking.max}/${chunking.seed}`;
  const cache = cacheFile ? await new StatCache(cacheFile, chunkingId).load() : undefined;
  const hashed = new Map<string, StatEntry>();
  const toHash: ScannedFile[] = [];
  for (const f of scan.files) {
    const hit = cache?.lookup(f.path, f);
    if (hit) hashed.set(f.path, hit);
    else toHash.push(f);
  }
  const filesCached = hashed.size;
  let bytesHashed = 0;
  const hashProgress = phaseReporter(opts.onProgress, 'hash', toHash.length, toHash.reduce((s, f) => s + f.size, 0));
  // Workers count bytes as they read, so progress moves inside a single large file too.
  const counter = new BytesCounter();
  let counted = 0;
  const tick = () => {
    const now = counter.value;
    hashProgress.add(0, now - counted);
    counted = now;
  };
  const ticker = setInterval(tick, 200);
  await forEachLimit(batchFiles(toHash), hasher.threads * 2, async (batch) => {
    const large = batch.length === 1 && batch[0]!.size >= LARGE_FILE && hasher.threads > 1;
    const results = large ? [await hasher.hashLargeFile(batch[0]!.abs, chunking, counter)] : await hasher.hashFiles(batch.map((f) => f.abs), chunking, counter);
    results.forEach((r, i) => {
      const f = batch[i]!;
      if (!('sha256' in r)) throw new KkError('SOURCE_INVALID', `cannot read ${f.abs}: ${r.reason}`);
      if (r.size !== f.size) throw new KkError('SOURCE_INVALID', `${f.abs} changed size while it was being pushed`, { hint: 'push from a finished build directory' });
      hashed.set(f.path, { size: f.size, mtimeMs: f.mtimeMs, ctimeMs: f.ctimeMs, ino: f.ino, sha256: r.sha256 as Digest, chunks: r.chunks as ChunkRef[] });
      bytesHashed += r.size;
    });
    tick();
    hashProgress.add(batch.length, 0);
  }).finally(() => clearInterval(ticker));
  hashProgress.end();

  // ---- manifest ----
  const files: FileEntry[] = scan.files.map((f) => {
    const h = hashed.get(f.path)!;
    const entry: FileEntry = { path: f.path, size: f.size, mode: f.mode, mtime: f.mtimeMs, sha256: h.sha256 };
    if (h.chunks.length > 1) entry.chunks = h.chunks;
    return entry;
  });
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    project: opts.project,
    app: opts.app,
    version: opts.version,
    created: new Date().toISOString(),
    builder: opts.builder ?? defaultActor(),
    git_commit: opts.gitCommit ?? '',
    meta: opts.meta ?? {},
    chunking,
    dirs: scan.dirs,
    files,
  };
  // The push's ignore rules travel with the version: pulls protect those paths too (issue 10 item 5).
  if (opts.ignore?.length) manifest.ignore = [...opts.ignore];

  // Where each chunk can be read back from: the first file and offset that holds it.
  const source = new Map<Digest, { abs: string; offset: number; size: number }>();
  const absOf = new Map(scan.files.map((f) => [f.path, f.abs]));
  for (const f of files) {
    let offset = 0;
    for (const [d, size] of fileChunks(f)) {
      if (!source.has(d)) source.set(d, { abs: absOf.get(f.path)!, offset, size });
      offset += size;
    }
  }

  // Versions are immutable: decide before sending anything. The same tree again is a success.
  const existing = await store.getRef(opts.project, opts.app, opts.version);
  if (existing) {
    const old = await store.getManifest(existing.manifest);
    if (!sameContent(old, manifest)) {
      throw new KkError('VERSION_EXISTS', `${opts.project}/${opts.app} version ${opts.version} already exists with different content`, {
        hint: 'versions are immutable: push under a new version name',
        details: { project: opts.project, app: opts.app, version: opts.version, existing: existing.manifest },
      });
    }
    // Chunks the store lost (`kk fsck --repair` quarantined damaged ones) are sent again.
    const restored = await restoreChunks(store, hasher, source, opts, existing.chunkMap);
    return {
      ...emptyResult(opts, existing.manifest, scan, toHash.length, bytesHashed, filesCached),
      ...restored,
      durationMs: Math.round(performance.now() - t0),
    };
  }

  // ---- upload what the store lacks, under a lease GC honours ----
  // Deltas against the previous version: optional hints that let pullers holding it fetch a
  // few bytes instead of whole chunks when a build changed little inside large files.
  let deltaStats = { deltas: 0, bytes: 0 };
  if (opts.deltas !== false) {
    const found = await computeDeltas(store, hasher, opts, files, absOf);
    if (found.map.size) manifest.deltas = Object.fromEntries(found.map);
    deltaStats = { deltas: found.map.size, bytes: found.bytes };
  }

  // The lease names the manifest too: GC must not sweep it between its write and the ref's.
  const { digest: manifestDigest } = encodeManifest(manifest);
  const lease = await acquirePushLease(store, [...source.keys(), manifestDigest], opts.locks);
  let chunksUploaded = 0;
  let bytesUploaded = 0;
  let bytesUploadedStored = 0;
  let packsUploaded = 0;
  let chunksReusedFromPacks = 0;
  let status: 'created' | 'unchanged';
  let digest: Digest;
  try {
    // Under the lease: what earlier versions packed is found in their chunk maps (GC keeps the
    // packs of chunks a lease names), the rest is asked for loose (PACKS.md "Dedup").
    const policy = store.config.packs;
    const known = policy ? await store.recentChunkMaps(opts.project, opts.app) : [];
    const packed: ChunkMapEntry[] = [];
    if (known.length) {
      for (const d of source.keys()) {
        for (const m of known) {
          const e = m.find(d);
          if (e) {
            packed.push(e);
            break;
          }
        }
      }
      chunksReusedFromPacks = packed.length;
    }
    const inPacks = new Set(packed.map((e) => e.digest));
    const rest = [...source.keys()].filter((d) => !inPacks.has(d));
    const missing = store.driver.capabilities.packsOnly ? rest : await store.missingChunks(rest);
    const up = phaseReporter(opts.onProgress, 'upload', missing.length, missing.reduce((s, d) => s + source.get(d)!.size, 0));
    const writer = policy ? new PackAssembler(policy, store.config.compression) : undefined;
    const storePack = async (p: SealedPack) => {
      // The pack's own chunk map first: a GC that runs meanwhile finds the leased chunks in it
      // and keeps the pack (a pack written after GC began listing is young to it; PACKS.md "GC").
      await store.putChunkMap(p.entries);
      await store.putPack(p.digest, p.bytes);
      packsUploaded++;
      bytesUploadedStored += p.bytes.length;
      packed.push(...p.entries);
    };
    // Chunks travel to the pool in batches (one message per ~2 MiB); small ones to the store in
    // packs, large ones one by one. Chunks bound for a frame come back raw: the frame is
    // compressed as a whole (PACKS.md "Frames").
    const framed = (size: number) => !!writer && packsChunk(policy, size) && writer.framed(size);
    // Uploads leave the encoding slots at once (a round trip to the store never holds up the
    // next encode) up to a budget of bytes in flight.
    const uploads = new UploadQueue(opts.concurrency ?? 8, UPLOAD_BUDGET);
    await forEachLimit(batchChunks(missing, source), hasher.threads + 1, async (batch) => {
      const small = batch.filter((c) => framed(c.size));
      const alone = small.length ? batch.filter((c) => !framed(c.size)) : batch;
      const [rawObjects, objects] = await Promise.all([
        small.length ? hasher.encodeChunks(small, RAW) : [],
        alone.length ? hasher.encodeChunks(alone, store.config.compression) : [],
      ]);
      for (const [i, r] of rawObjects.entries()) {
        const src = small[i]!;
        if (!r.ok) throw new KkError('SOURCE_INVALID', r.reason, { hint: 'push from a finished build directory' });
        for (const full of await writer!.addRaw(src.digest, r.object.subarray(1), src.size)) await uploads.add(full.bytes.length, () => storePack(full));
        chunksUploaded++;
        bytesUploaded += src.size;
        up.add(1, src.size);
      }
      for (const [i, r] of objects.entries()) {
        const src = alone[i]!;
        if (!r.ok) throw new KkError('SOURCE_INVALID', r.reason, { hint: 'push from a finished build directory' });
        if (writer && packsChunk(policy, src.size)) {
          chunksUploaded++;
          bytesUploaded += src.size;
          up.add(1, src.size);
          for (const p of writer.addObject(src.digest, r.object, src.size)) await uploads.add(p.bytes.length, () => storePack(p));
        } else {
          await uploads.add(r.object.length, async () => {
            if (await store.putChunkObject(src.digest, r.object)) {
              chunksUploaded++;
              bytesUploaded += src.size;
              bytesUploadedStored += r.object.length;
            }
            up.add(1, src.size);
          });
        }
      }
    }).finally(() => uploads.drain().catch(() => {}));
    await uploads.drain();
    for (const p of (await writer?.finish()) ?? []) await storePack(p);
    up.end();
    // Packs before the chunk map, the chunk map before the manifest and the ref that name it.
    const chunkMap = packed.length ? (await store.putChunkMap(packed)).digest : undefined;
    digest = await store.putManifest(manifest);
    // Chunks and manifest durable before the ref names them; the ref durable before we return.
    await store.flush();
    status = await store.putRef(opts.project, opts.app, opts.version, digest, opts.by, undefined, chunkMap);
    await store.flush();
  } catch (err) {
    // A store out of space: nothing names the chunks written so far (no ref), GC sweeps them.
    const cause = (err as { cause?: NodeJS.ErrnoException })?.cause;
    // A driver that says DISK_FULL itself (file, http) has said it best.
    if (!(err instanceof KkError && err.code === 'DISK_FULL') && (cause?.code === 'ENOSPC' || cause?.code === 'EDQUOT' || /\bENOSPC\b/.test((err as Error)?.message ?? ''))) {
      const remaining = missingBytes(source) - bytesUploadedStored;
      throw new KkError('DISK_FULL', `the ${store.driver.name} store ran out of space: this version needs about ${Math.ceil(Math.max(0, remaining) / 1024 / 1024)} MiB more there`, {
        cause: err,
        hint: 'free space in the store (kk gc removes unreferenced chunks), then push again; the version was not created',
        details: { bytesUploaded: bytesUploadedStored },
      });
    }
    throw err;
  } finally {
    await lease.release().catch(() => {});
  }

  if (cache) {
    cache.replace(hashed);
    await cache.save().catch(() => {});
  }

  let retention: RetentionResult | undefined;
  if (opts.retainVersions) {
    opts.onProgress?.({ phase: 'retention', done: 0, total: 0, bytesDone: 0, bytesTotal: 0 });
    retention = await applyRetention({ store, project: opts.project, app: opts.app, keep: opts.retainVersions });
  }

  const result: PushResult = {
    project: opts.project,
    app: opts.app,
    version: opts.version,
    manifest: digest,
    status,
    files: files.length,
    dirs: scan.dirs.length,
    bytes: scan.bytes,
    filesHashed: toHash.length,
    bytesHashed,
    filesCached,
    chunks: source.size,
    chunksUploaded,
    bytesUploaded,
    bytesUploadedStored,
    packsUploaded,
    chunksReusedFromPacks,
    deltas: deltaStats.deltas,
    bytesDeltas: deltaStats.bytes,
    durationMs: Math.round(performance.now() - t0),
  };
  if (retention) result.retention = retention;
  return result;
}

/**
 * Uploads run `concurrency` at a time while the caller goes on; `add` waits only while more than
 * `budget` bytes are queued or running. The first failure rejects every later `add` and `drain`.
 */
class UploadQueue {
  private running = 0;
  private bytes = 0;
  private failed: unknown;
  private readonly queue: { size: number; fn: () => Promise<void> }[] = [];
  private waiters: (() => void)[] = [];

  constructor(
    private readonly concurrency: number,
    private readonly budget: number,
  ) {}

  async add(size: number, fn: () => Promise<void>): Promise<void> {
    while (this.failed === undefined && this.bytes > 0 && this.bytes + size > this.budget) await new Promise<void>((r) => this.waiters.push(r));
    if (this.failed !== undefined) throw this.failed;
    this.bytes += size;
    this.queue.push({ size, fn });
    this.pump();
  }

  /** Every upload added so far finished; throws the first failure. */
  async drain(): Promise<void> {
    // After a failure the queued uploads are dropped; the running ones still finish first.
    while (this.running || (this.failed === undefined && this.queue.length)) await new Promise<void>((r) => this.waiters.push(r));
    if (this.failed !== undefined) throw this.failed;
  }

  private pump(): void {
    while (this.running < this.concurrency && this.queue.length && this.failed === undefined) {
      const { size, fn } = this.queue.shift()!;
      this.running++;
      void fn()
        .catch((err: unknown) => {
          this.failed ??= err;
        })
        .finally(() => {
          this.running--;
          this.bytes -= size;
          const waiters = this.waiters;
          this.waiters = [];
          for (const w of waiters) w();
          this.pump();
        });
    }
  }
}

function missingBytes(source: Map<Digest, { size: number }>): number {
  let n = 0;
  for (const v of source.values()) n += v.size;
  return n;
}

/** Upload the chunks of `source` that the store lacks, under a push lease (issue 10 item 23). */
async function restoreChunks(
  store: Store,
  hasher: Hasher,
  source: Map<Digest, { abs: string; offset: number; size: number }>,
  opts: PushOptions,
  chunkMap: Digest | undefined,
): Promise<{ chunksUploaded: number; bytesUploaded: number; bytesUploadedStored: number }> {
  const out = { chunksUploaded: 0, bytesUploaded: 0, bytesUploadedStored: 0 };
  // Chunks in packs that are still there are present; a pack `kk fsck --repair` quarantined is
  // not, and its chunks come back loose (readers fall back to them).
  const inPacks = async (): Promise<Set<Digest>> => {
    if (!chunkMap) return new Set();
    const map = await store.getChunkMap(chunkMap);
    const have = await store.driver.hasMany(map.packs.map(packKey));
    const alive = new Set(map.packs.filter((_, i) => have[i]));
    return new Set([...map.entries()].filter((e) => alive.has(e.pack)).map((e) => e.digest));
  };
  const lacking = async () => {
    const packed = await inPacks();
    return store.missingChunks([...source.keys()].filter((d) => !packed.has(d)));
  };
  if (store.driver.capabilities.packsOnly || !(await lacking()).length) return out;
  const lease = await acquirePushLease(store, [...source.keys()], opts.locks);
  try {
    const missing = await lacking();
    await forEachLimit(batchChunks(missing, source), hasher.threads + 1, async (batch) => {
      const objects = await hasher.encodeChunks(batch, store.config.compression);
      await forEachLimit(objects.keys(), opts.concurrency ?? 8, async (i) => {
        const r = objects[i]!;
        if (!r.ok) throw new KkError('SOURCE_INVALID', r.reason, { hint: 'push from a finished build directory' });
        if (await store.putChunkObject(batch[i]!.digest, r.object)) {
          out.chunksUploaded++;
          out.bytesUploaded += batch[i]!.size;
          out.bytesUploadedStored += r.object.length;
        }
      });
    });
    await store.flush();
  } finally {
    await lease.release().catch(() => {});
  }
  return out;
}

function emptyResult(
  opts: PushOptions,
  manifest: Digest,
  scan: { files: unknown[]; dirs: unknown[]; bytes: number },
  filesHashed: number,
  bytesHashed: number,
  filesCached: number,
): PushResult {
  return {
    project: opts.project,
    app: opts.app,
    version: opts.version,
    manifest,
    status: 'unchanged',
    files: scan.files.length,
    dirs: scan.dirs.length,
    bytes: scan.bytes,
    filesHashed,
    bytesHashed,
    filesCached,
    chunks: 0,
    chunksUploaded: 0,
    bytesUploaded: 0,
    bytesUploadedStored: 0,
    packsUploaded: 0,
    chunksReusedFromPacks: 0,
    deltas: 0,
    bytesDeltas: 0,
    durationMs: 0,
  };
}

/** Base bytes a push reads back from the store to compute deltas, at most. */
const DELTA_BASE_BUDGET = 256 * 1024 * 1024;
/** A delta is kept only if it is at most this fraction of its chunk. */
const DELTA_MAX_RATIO = 0.25;

interface DeltaCandidate {
  path: string;
  offset: number;
  size: number;
  digest: Digest;
  baseDigest: Digest;
  baseSize: number;
}

/**
 * Pair each chunk the previous version lacks with the previous version's chunk that overlapped
 * the same bytes of the same path, and store a delta where it is small. Best effort: a delta
 * that cannot be made or stored is simply not offered.
 */
async function computeDeltas(
  store: Store,
  hasher: Hasher,
  opts: PushOptions,
  files: FileEntry[],
  absOf: Map<string, string>,
): Promise<{ map: Map<Digest, Digest>; bytes: number }> {
  const map = new Map<Digest, Digest>();
  let bytes = 0;
  let prev: Manifest;
  try {
    prev = await store.getManifest((await store.resolveVersion(opts.project, opts.app, 'latest')).manifest);
  } catch (err) {
    if (err instanceof KkError && err.code === 'NOT_FOUND') return { map, bytes };
    throw err;
  }
  const prevChunks = new Set<Digest>();
  const byPath = new Map<string, { offset: number; size: number; digest: Digest }[]>();
  for (const f of prev.files) {
    const list: { offset: number; size: number; digest: Digest }[] = [];
    let offset = 0;
    for (const [d, size] of fileChunks(f)) {
      prevChunks.add(d);
      list.push({ offset, size, digest: d });
      offset += size;
    }
    byPath.set(f.path, list);
  }
  const candidates: DeltaCandidate[] = [];
  const seen = new Set<Digest>();
  let budget = DELTA_BASE_BUDGET;
  for (const f of files) {
    const old = byPath.get(f.path);
    if (!old?.length) continue;
    let offset = 0;
    for (const [d, size] of fileChunks(f)) {
      if (!prevChunks.has(d) && !seen.has(d)) {
        const base = bestOverlap(old, offset, size);
        if (base && base.size <= budget) {
          budget -= base.size;
          seen.add(d);
          candidates.push({ path: absOf.get(f.path)!, offset, size, digest: d, baseDigest: base.digest, baseSize: base.size });
        }
      }
      offset += size;
    }
  }
  let fruitless = 0;
  for (let i = 0; i < candidates.length && fruitless < 4; i += 16) {
    const batch = candidates.slice(i, i + 16);
    const items: DeltaRequest[] = [];
    await forEachLimit(batch, opts.concurrency ?? 8, async (c) => {
      const baseObject = await store.getChunkObject(c.baseDigest).catch(() => undefined);
      if (baseObject) items.push({ ...c, baseObject });
    });
    const objects = await hasher.makeDeltas(items, DELTA_MAX_RATIO);
    let useful = 0;
    await forEachLimit(objects.keys(), opts.concurrency ?? 8, async (j) => {
      const object = objects[j];
      const it = items[j]!;
      if (!object) return;
      const stored = await store.putDelta(it.digest as Digest, it.baseDigest as Digest, object).then(() => true, () => false);
      if (!stored) return;
      map.set(it.digest as Digest, it.baseDigest as Digest);
      bytes += object.length;
      useful++;
    });
    // Unrelated content (a new binary, say) makes no useful deltas: stop reading bases.
    fruitless = useful ? 0 : fruitless + 1;
  }
  return { map, bytes };
}

function bestOverlap(chunks: { offset: number; size: number; digest: Digest }[], offset: number, size: number) {
  let lo = 0;
  let hi = chunks.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (chunks[mid]!.offset + chunks[mid]!.size <= offset) lo = mid + 1;
    else hi = mid;
  }
  let best: (typeof chunks)[number] | undefined;
  let bestLen = 0;
  for (let k = Math.max(0, lo - 1); k < chunks.length && chunks[k]!.offset < offset + size; k++) {
    const c = chunks[k]!;
    const len = Math.min(c.offset + c.size, offset + size) - Math.max(c.offset, offset);
    if (len > bestLen && c.size > 0) {
      best = c;
      bestLen = len;
    }
  }
  // Past the end of the old file (the file grew): its last chunk is the closest relative.
  return best ?? (offset >= (chunks.at(-1)?.offset ?? 0) ? chunks.at(-1) : undefined);
}

function batchChunks(digests: Digest[], source: Map<Digest, { abs: string; offset: number; size: number }>): Iterable<ChunkSource[]> {
  const items = digests.map((d) => {
    const s = source.get(d)!;
    return { path: s.abs, offset: s.offset, size: s.size, digest: d };
  });
  return batches(items, (c) => c.size, UPLOAD_BATCH_BYTES, BATCH_FILES);
}

/** Small files travel to the pool in batches; large files alone. */
function* batchFiles(files: ScannedFile[]): Generator<ScannedFile[]> {
  for (const f of files) if (f.size >= SMALL_FILE) yield [f];
  yield* batches(
    files.filter((f) => f.size < SMALL_FILE),
    (f) => f.size,
    BATCH_BYTES,
    BATCH_FILES,
  );
}
