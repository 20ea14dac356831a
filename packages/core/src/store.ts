// The core Store: wraps any driver, validates names and digests before I/O, maps backend
// failures to KkError codes, and owns the key layout of DESIGN 3.
import { hostname, userInfo } from 'node:os';
import { type Digest, assertDigest, digestHex, isDigest } from './digest.js';
import { type Driver, type PruneDriver, type PullRecord, type WriteDriver, isPruneDriver, isWriteDriver } from './driver.js';
import { KkError, isKkError } from './errors.js';
import { type Manifest, compressManifest, decodeManifest, encodeManifest, manifestKey } from './manifest.js';
import { assertAppName, assertChannelName, assertProjectName, assertVersionName } from './names.js';
import { type ChunkingParams, assertChunkingParams, chunkingFor } from './chunking.js';
import { type CompressionPolicy, DEFAULT_COMPRESSION } from './hash/codec.js';
import {
  ALL_PACKS_POLICY,
  type ChunkMap,
  type ChunkMapEntry,
  type PackPolicy,
  assertPackPolicy,
  chunkMapKey,
  coalesceRanges,
  decodeChunkMap,
  decodeFrame,
  encodeChunkMap,
  frameMember,
  packKey,
} from './pack.js';

export const STORE_FORMAT = 'kk-store/1';
export const STORE_CONFIG_KEY = 'kk-store.json';

export interface StoreConfig {
  format: typeof STORE_FORMAT;
  chunking: ChunkingParams;
  compression: CompressionPolicy;
  /** Which chunks go into packs (DESIGN 11, PACKS.md); absent in stores made before packs: loose only. */
  packs?: PackPolicy;
  /**
   * How manifests are stored: `brotli` (MANIFEST_BROTLI + brotli of the JSON; new stores with a
   * pack policy), absent = the JSON itself (older stores, and docker:// / tar://, whose blob
   * names must be the SHA-256 of their bytes). Readers accept both forms in any store.
   */
  manifests?: 'brotli';
  created: string;
}

export interface Ref {
  manifest: Digest;
  /** The version's chunk map, when some of its chunks live in packs. */
  chunkMap?: Digest;
  created: string;
  by: string;
}

export interface VersionInfo extends Ref {
  project: string;
  app: string;
  version: string;
}

export interface ChannelEntry {
  version: string;
  manifest: Digest;
  updated: string;
  by: string;
}

export interface Channel extends ChannelEntry {
  /** Earlier positions, newest first (at most 100). */
  history: ChannelEntry[];
}

export interface OpenStoreOptions {
  /** Create kk-store.json when absent (push does; pull does not). */
  create?: boolean;
  /** Average chunk size for a new store. */
  avgChunkSize?: number;
  /** Exact chunking for a new store (copying a store keeps its boundaries); wins over avgChunkSize. */
  chunking?: ChunkingParams;
  compression?: CompressionPolicy;
  /**
   * Pack policy of a new store: `kk push` passes DEFAULT_PACK_POLICY (small chunks in packs).
   * Absent or `false`: every chunk loose (the format before packs). Always `all` when the driver
   * declares `packsOnly`.
   */
  packs?: PackPolicy | false;
  /** Manifest storage of a new store; default `brotli` when it gets a pack policy (never for packsOnly drivers). */
  manifests?: 'brotli' | 'json';
}

export function chunkKey(d: Digest): string {
  const hex = digestHex(d);
  return `chunks/${hex.slice(0, 2)}/${hex}`;
}

/** Key of the delta that rebuilds chunk `target` from chunk `base`. */
export function deltaKey(target: Digest, base: Digest): string {
  const t = digestHex(target);
  return `deltas/${t.slice(0, 2)}/${t}.${digestHex(base)}`;
}

/** The target chunk of a delta key. */
export function targetFromDeltaKey(key: string): Digest | undefined {
  const m = /^deltas\/[0-9a-f]{2}\/([0-9a-f]{64})\.[0-9a-f]{64}$/.exec(key);
  return m ? (`sha256:${m[1]}` as Digest) : undefined;
}

export function digestFromChunkKey(key: string): Digest | undefined {
  const d = `sha256:${key.slice(key.lastIndexOf('/') + 1)}`;
  return isDigest(d) ? d : undefined;
}

/** Who is acting, recorded in refs and channels. */
export function defaultActor(): string {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // containers without a passwd entry
  }
  return `${user}@${hostname()}`;
}

const HAS_MANY_BATCH = 1000;
/** Chunk maps a Store keeps decoded (LRU), and chunk maps of read refs it remembers to consult. */
const LOADED_MAPS = 32;
const KNOWN_MAPS = 256;
/** Range reads of packed chunks in flight at once per Store (the rest queue and coalesce). */
const PACK_READS_IN_FLIGHT = 4;
/** Decoded frames a Store keeps (LRU, raw bytes): neighbours in one frame cost one decode. */
const FRAME_CACHE_BYTES = 8 * 1024 * 1024;

export class Store {
  /** Chunk maps named by refs this instance read (or given to useChunkMap), newest last. */
  private readonly knownMaps = new Set<Digest>();
  private readonly loadedMaps = new Map<Digest, ChunkMap>();
  /** Decoded frames by `pack@offset`, oldest first; `bytes` is 0 until the decode finished. */
  private readonly frames = new Map<string, { raw: Promise<Buffer>; bytes: number }>();
  private frameBytes = 0;
  /** Chunk objects (not in frames) a range read in flight carries, by `pack@offset`. */
  private readonly inflight = new Map<string, Promise<Buffer>>();
  /**
   * Stored bytes this Store read for chunks (loose objects and pack ranges as they came from the
   * driver, a frame once however many of its chunks were asked for): what a pull moved. The
   * objects getChunkObject returns can be larger (a chunk of a frame comes back raw).
   */
  chunkBytesRead = 0;

  private constructor(
    readonly driver: Driver,
    readonly config: StoreConfig,
  ) {}

  /** Open a store; with `create`, initialise an empty one. */
  static async open(driver: Driver, opts: OpenStoreOptions = {}): Promise<Store> {
    const raw = await backend(driver, () => driver.get(STORE_CONFIG_KEY));
    if (raw) return new Store(driver, parseStoreConfig(raw));
    if (!opts.create) {
      throw new KkError('NOT_FOUND', `no kk store at ${driver.name} (${STORE_CONFIG_KEY} is missing)`, {
        hint: 'check the store URL; a first push creates the store',
      });
    }
    const w = writable(driver);
    const packsOnly = !!driver.capabilities.packsOnly;
    const config: StoreConfig = {
      format: STORE_FORMAT,
      chunking: opts.chunking ?? chunkingFor(opts.avgChunkSize),
      compression: opts.compression ?? DEFAULT_COMPRESSION,
      created: new Date().toISOString(),
    };
    if (packsOnly) config.packs = { ...ALL_PACKS_POLICY, target: opts.packs ? opts.packs.target : ALL_PACKS_POLICY.target };
    else if (opts.packs) config.packs = opts.packs;
    if (!packsOnly && (opts.manifests ?? (opts.packs ? 'brotli' : 'json')) === 'brotli') config.manifests = 'brotli';
    await backend(driver, () => w.putIfAbsent(STORE_CONFIG_KEY, Buffer.from(JSON.stringify(config, null, 2))));
    // Another creator may have won the race: whatever is stored now is the truth.
    const stored = await backend(driver, () => driver.get(STORE_CONFIG_KEY));
    return new Store(driver, parseStoreConfig(stored!));
  }

  get writer(): WriteDriver {
    return writable(this.driver);
  }

  get pruner(): PruneDriver {
    if (!isPruneDriver(this.driver)) {
      throw new KkError('FORBIDDEN', `the ${this.driver.name} store does not support deletion`);
    }
    return this.driver;
  }

  /** Release the driver's sockets and handles. */
  async close(): Promise<void> {
    await this.driver.close();
  }

  /** Make completed writes durable (drivers that buffer durability implement flush). */
  async flush(): Promise<void> {
    const w = this.driver as WriteDriver;
    if (typeof w.flush === 'function') await this.call(() => w.flush!());
  }

  /** Report a completed pull to a store that records events; never throws. */
  async recordPull(event: PullRecord): Promise<void> {
    await this.driver.recordPull?.(event).catch(() => {});
  }

  private call<T>(fn: () => Promise<T>): Promise<T> {
    return backend(this.driver, fn);
  }

  // ---- chunks ----

  /**
   * Digests (deduplicated) that the store lacks, in first-seen order. Chunks listed in one of
   * `chunkMaps` count as present (their packs are the caller's to check); the rest are looked
   * up as loose objects.
   */
  async missingChunks(digests: Iterable<Digest>, chunkMaps: readonly ChunkMap[] = []): Promise<Digest[]> {
    let unique = [...new Set(digests)];
    unique.forEach((d) => assertDigest(d, 'chunk digest'));
    if (chunkMaps.length) unique = unique.filter((d) => !chunkMaps.some((m) => m.find(d)));
    const missing: Digest[] = [];
    for (let i = 0; i < unique.length; i += HAS_MANY_BATCH) {
      const batch = unique.slice(i, i + HAS_MANY_BATCH);
      const have = await this.call(() => this.driver.hasMany(batch.map(chunkKey)));
      batch.forEach((d, j) => {
        if (!have[j]) missing.push(d);
      });
    }
    return missing;
  }

  /** Store an encoded chunk object (header + payload) under the digest of its raw bytes. */
  async putChunkObject(digest: Digest, object: Uint8Array): Promise<boolean> {
    assertDigest(digest, 'chunk digest');
    if (object.length < 1 || object[0]! > 1) throw new TypeError('not an encoded chunk object');
    if (this.driver.capabilities.packsOnly) throw new TypeError(`the ${this.driver.name} store keeps every chunk in a pack`);
    return this.call(() => this.writer.putIfAbsent(chunkKey(digest), object));
  }

  /**
   * The stored object of a chunk, still encoded: from a pack (found through the chunk maps of
   * refs this Store read, or given to useChunkMap) with a range read, else the loose object.
   * Callers verify it while decoding (the Hasher's decodeChunk / writeChunk); a missing chunk
   * is NOT_FOUND.
   */
  async getChunkObject(digest: Digest): Promise<Buffer> {
    assertDigest(digest, 'chunk digest');
    const loose = () => (this.driver.capabilities.packsOnly ? Promise.resolve(undefined) : this.call(() => this.driver.get(chunkKey(digest))).then((b) => this.counted(b)));
    // A chunk whose pack is gone (quarantined by fsck --repair) may have come back loose.
    const packedOrLoose = (at: ChunkMapEntry) =>
      this.readPacked(at).catch(async (err: unknown) => {
        if (!(err instanceof KkError && err.code === 'NOT_FOUND')) throw err;
        const obj = await loose();
        if (obj) return obj;
        throw err;
      });
    let at = await this.locate(digest, false);
    if (at) return packedOrLoose(at);
    const obj = await loose();
    if (obj) return obj;
    at = await this.locate(digest, true);
    if (at) return packedOrLoose(at);
    throw new KkError('NOT_FOUND', `chunk ${digest} is missing from the store`, { details: { digest } });
  }

  /**
   * Many chunk objects, still encoded (callers verify them): chunks in one pack whose ranges
   * are near each other come with one range read. NOT_FOUND names the first missing chunk.
   */
  async getChunkObjects(digests: readonly Digest[], concurrency = 8): Promise<Map<Digest, Buffer>> {
    const out = new Map<Digest, Buffer>();
    const packed: ChunkMapEntry[] = [];
    const loose: Digest[] = [];
    for (const d of new Set(digests)) {
      assertDigest(d, 'chunk digest');
      const at = await this.locate(d, true);
      if (at) packed.push(at);
      else loose.push(d);
    }
    // Chunks of frames decoded lately, or being read by another call, need no read of their own.
    const toRead: ChunkMapEntry[] = [];
    const fromFrames: Promise<void>[] = [];
    let failed: unknown;
    const viaFrame = (e: ChunkMapEntry, p: Promise<Buffer>) =>
      fromFrames.push(
        p.then(
          (o) => void out.set(e.digest, o),
          (err: unknown) => {
            if (err instanceof KkError && err.code === 'NOT_FOUND') loose.push(e.digest);
            else failed ??= err;
          },
        ),
      );
    for (const e of packed) {
      const cached = this.cachedFrameChunk(e);
      if (cached) viaFrame(e, cached);
      else toRead.push(e);
    }
    await forEachLimit(coalesceRanges(toRead), concurrency, async (all) => {
      const g = this.unclaimed(all, viaFrame);
      if (!g) return;
      const claimed = this.claimFrames(g.entries);
      let bytes: Buffer | undefined;
      try {
        bytes = this.counted(await this.call(() => this.driver.get(packKey(g.pack), { start: g.start, end: g.end })));
      } catch (err) {
        this.settleFrames(claimed, g, { err });
        throw err;
      }
      this.settleFrames(claimed, g, { bytes });
      if (!bytes) loose.push(...g.entries.map((e) => e.digest));
      else for (const e of g.entries) out.set(e.digest, await this.slicePacked(e, bytes, g.start));
    }).finally(() => Promise.all(fromFrames));
    if (failed !== undefined) throw failed;
    // Drivers with a batch GET (http) fetch loose chunks a thousand a request.
    const getMany = (this.driver as { getMany?: (keys: readonly string[]) => Promise<(Buffer | undefined)[]> }).getMany;
    if (typeof getMany === 'function' && !this.driver.capabilities.packsOnly && loose.length) {
      const slices: Digest[][] = [];
      for (let i = 0; i < loose.length; i += HAS_MANY_BATCH) slices.push(loose.slice(i, i + HAS_MANY_BATCH));
      const rest: Digest[] = [];
      await forEachLimit(slices, Math.min(concurrency, 4), async (slice) => {
        const got = await this.call(() => getMany.call(this.driver, slice.map(chunkKey)));
        slice.forEach((d, j) => {
          const b = this.counted(got[j]);
          if (b) out.set(d, b);
          else rest.push(d);
        });
      });
      // Not loose after all: a packed lookup through maps not loaded yet, or NOT_FOUND.
      loose.splice(0, loose.length, ...rest);
    }
    await forEachLimit(loose, concurrency, async (d) => {
      out.set(d, await this.getChunkObject(d));
    });
    return out;
  }

  /**
   * The chunk maps of an app's newest versions (at most `n`): the index a push or copy uses to
   * reuse chunks already in packs without asking for each (PACKS.md "Dedup"). A damaged or
   * missing chunk map is skipped (its chunks are then uploaded again).
   */
  async recentChunkMaps(project: string, app: string, n = 3): Promise<ChunkMap[]> {
    const maps: ChunkMap[] = [];
    for (const v of await this.listVersions(project, app)) {
      if (maps.length >= n) break;
      if (!v.chunkMap) continue;
      try {
        maps.push(await this.getChunkMap(v.chunkMap));
      } catch (err) {
        if (!(err instanceof KkError && (err.code === 'NOT_FOUND' || err.code === 'STORE_INVALID'))) throw err;
      }
    }
    return maps;
  }

  /** Consult this chunk map (a version's, from its ref) when looking for packed chunks. */
  useChunkMap(digest: Digest): void {
    assertDigest(digest, 'chunk map digest');
    this.knownMaps.delete(digest);
    this.knownMaps.add(digest);
    if (this.knownMaps.size > KNOWN_MAPS) this.knownMaps.delete(this.knownMaps.values().next().value!);
  }

  /** Where a packed chunk lives, searching decoded chunk maps (and with `load`, the known rest). */
  private async locate(digest: Digest, load: boolean): Promise<ChunkMapEntry | undefined> {
    for (const m of this.loadedMaps.values()) {
      const e = m.find(digest);
      if (e) return e;
    }
    if (!load) {
      // The first lookup of a store with packs loads the newest known map rather than a 404.
      const newest = [...this.knownMaps].at(-1);
      if (!newest || this.loadedMaps.has(newest)) return undefined;
      return (await this.getChunkMap(newest)).find(digest);
    }
    for (const d of [...this.knownMaps].reverse()) {
      if (this.loadedMaps.has(d)) continue;
      const e = (await this.getChunkMap(d)).find(digest);
      if (e) return e;
    }
    return undefined;
  }

  /**
   * One packed chunk. Reads of packed chunks are limited to a few in flight; requests that
   * arrive meanwhile wait and go out together, neighbours in one pack as one range read (a pull
   * asking for chunk after chunk gets few large reads, not one request per small file).
   */
  private readPacked(e: ChunkMapEntry): Promise<Buffer> {
    const cached = this.cachedFrameChunk(e);
    if (cached) return cached;
    return new Promise((resolve, reject) => {
      this.packQueue.push({ e, resolve, reject });
      this.pumpPackReads();
    });
  }

  private readonly packQueue: { e: ChunkMapEntry; resolve: (b: Buffer) => void; reject: (err: unknown) => void }[] = [];
  private packReadsInFlight = 0;

  private pumpPackReads(): void {
    while (this.packReadsInFlight < PACK_READS_IN_FLIGHT && this.packQueue.length) {
      const queued = this.packQueue.splice(0);
      const waiting = new Map<ChunkMapEntry, (typeof queued)[number][]>();
      for (const q of queued) waiting.set(q.e, [...(waiting.get(q.e) ?? []), q]);
      const groups = coalesceRanges([...waiting.keys()]);
      // Beyond the slots free now, the rest waits for the next round (and may merge further).
      const free = PACK_READS_IN_FLIGHT - this.packReadsInFlight;
      for (const g of groups.slice(free)) for (const e of g.entries) this.packQueue.push(...waiting.get(e)!);
      for (const all of groups.slice(0, free)) {
        // Frames another read claimed since these were queued come from that read.
        const g = this.unclaimed(all, (e, p) => {
          for (const q of waiting.get(e)!) p.then(q.resolve, q.reject);
        });
        if (!g) continue;
        const claimed = this.claimFrames(g.entries);
        this.packReadsInFlight++;
        void this.call(() => this.driver.get(packKey(g.pack), { start: g.start, end: g.end }))
          .then((b) => this.counted(b))
          .then(
            (bytes) => {
              this.settleFrames(claimed, g, { bytes });
              for (const e of g.entries) {
                const obj = this.slicePacked(e, bytes, g.start);
                for (const q of waiting.get(e)!) obj.then(q.resolve, q.reject);
              }
            },
            (err) => {
              this.settleFrames(claimed, g, { err });
              for (const e of g.entries) for (const q of waiting.get(e)!) q.reject(err);
            },
          )
          .finally(() => {
            this.packReadsInFlight--;
            this.pumpPackReads();
          });
      }
      if (groups.length > free) break;
    }
  }

  private counted(bytes: Buffer | undefined): Buffer | undefined {
    if (bytes) this.chunkBytesRead += bytes.length;
    return bytes;
  }

  /** The stored object of `e` out of a range read that began at `start` (a frame is decoded). */
  private async slicePacked(e: ChunkMapEntry, bytes: Buffer | undefined, start: number): Promise<Buffer> {
    if (!bytes) {
      throw new KkError('NOT_FOUND', `chunk ${e.digest} is missing from the store: its pack ${e.pack} is gone`, { details: { digest: e.digest, pack: e.pack } });
    }
    const from = e.offset - start;
    if (bytes.length < from + e.length) {
      throw new KkError('CHUNK_CORRUPT', `chunk ${e.digest} is damaged: pack ${e.pack} is shorter than its chunk map says`, {
        hint: 'the store holds damaged data: run `kk fsck --store <store> --repair`, then push the version again from its build',
        details: { digest: e.digest, pack: e.pack },
      });
    }
    const obj = bytes.subarray(from, from + e.length);
    if (e.inner === undefined) return obj;
    // A copy: the frame outlives the range read it came in.
    const f = this.frames.get(frameKey(e)) ?? this.addFrame(frameKey(e), decodeFrame(Buffer.from(obj)));
    return this.memberOf(e, f.raw);
  }

  /** Remember a frame being decoded; its raw bytes count against the cache once decoded. */
  private addFrame(key: string, raw: Promise<Buffer>): { raw: Promise<Buffer>; bytes: number } {
    const entry = { raw, bytes: 0 };
    this.frames.set(key, entry);
    raw.then(
      (b) => {
        if (this.frames.get(key) !== entry) return;
        entry.bytes = b.length;
        this.frameBytes += b.length;
        this.evictFrames();
      },
      () => {
        if (this.frames.get(key) === entry) this.frames.delete(key);
      },
    );
    return entry;
  }

  /**
   * Claim what `entries` need (their frames, or their chunk objects) that no read holds yet for
   * the read about to go out: a concurrent request for one of them waits for this read instead
   * of reading the same bytes again.
   */
  private claimFrames(entries: readonly ChunkMapEntry[]): Map<string, { resolve: (b: Promise<Buffer>) => void; reject: (err: unknown) => void }> {
    const out = new Map<string, { resolve: (b: Promise<Buffer>) => void; reject: (err: unknown) => void }>();
    for (const e of entries) {
      const key = frameKey(e);
      if (out.has(key) || (e.inner === undefined ? this.inflight.has(key) : this.frames.has(key))) continue;
      let settle!: { resolve: (b: Promise<Buffer>) => void; reject: (err: unknown) => void };
      const raw = new Promise<Buffer>((resolve, reject) => (settle = { resolve, reject }));
      raw.catch(() => {});
      if (e.inner === undefined) this.inflight.set(key, raw);
      else this.addFrame(key, raw);
      out.set(key, settle);
    }
    return out;
  }

  /** Hand what a read claimed its bytes (a frame decoded), or the read's failure. */
  private settleFrames(
    claimed: Map<string, { resolve: (b: Promise<Buffer>) => void; reject: (err: unknown) => void }>,
    g: { pack: Digest; start: number; entries: ChunkMapEntry[] },
    result: { bytes?: Buffer; err?: unknown },
  ): void {
    const { bytes } = result;
    for (const e of g.entries) {
      const key = frameKey(e);
      const c = claimed.get(key);
      if (!c) continue;
      claimed.delete(key);
      if (e.inner === undefined) this.inflight.delete(key);
      if ('err' in result) c.reject(result.err);
      else if (e.inner === undefined) c.resolve(this.slicePacked(e, bytes, g.start));
      else if (!bytes) c.reject(new KkError('NOT_FOUND', `chunk ${e.digest} is missing from the store: its pack ${e.pack} is gone`, { details: { digest: e.digest, pack: e.pack } }));
      else {
        const from = e.offset - g.start;
        if (bytes.length < from + e.length) c.reject(new Error('the pack is shorter than its chunk map says'));
        else c.resolve(decodeFrame(Buffer.from(bytes.subarray(from, from + e.length))));
      }
    }
  }

  /** A group of ranges without the chunks whose frames are cached or claimed (those go to `use`). */
  private unclaimed(
    g: { pack: Digest; start: number; end: number; entries: ChunkMapEntry[] },
    use: (e: ChunkMapEntry, p: Promise<Buffer>) => void,
  ): { pack: Digest; start: number; end: number; entries: ChunkMapEntry[] } | undefined {
    const rest: ChunkMapEntry[] = [];
    for (const e of g.entries) {
      const cached = this.cachedFrameChunk(e);
      if (cached) use(e, cached);
      else rest.push(e);
    }
    if (rest.length === g.entries.length) return g;
    if (!rest.length) return undefined;
    return { pack: g.pack, start: Math.min(...rest.map((e) => e.offset)), end: Math.max(...rest.map((e) => e.offset + e.length - 1)), entries: rest };
  }

  /** A chunk of a frame decoded lately (or being read or decoded), or a chunk object being read; else undefined. */
  private cachedFrameChunk(e: ChunkMapEntry): Promise<Buffer> | undefined {
    const key = frameKey(e);
    if (e.inner === undefined) return this.inflight.get(key);
    const f = this.frames.get(key);
    if (!f) return undefined;
    this.frames.delete(key);
    this.frames.set(key, f);
    return this.memberOf(e, f.raw);
  }

  private async memberOf(e: ChunkMapEntry, frame: Promise<Buffer>): Promise<Buffer> {
    const damaged = (why: string, cause?: unknown) =>
      new KkError('CHUNK_CORRUPT', `chunk ${e.digest} is damaged: its frame at offset ${e.offset} of pack ${e.pack} ${why}`, {
        cause,
        hint: 'the store holds damaged data: run `kk fsck --store <store> --repair`, then push the version again from its build',
        details: { digest: e.digest, pack: e.pack },
      });
    let raw: Buffer;
    try {
      raw = await frame;
    } catch (err) {
      // A failed read (NOT_FOUND lets callers fall back to a loose copy) is the read's error.
      if (isKkError(err)) throw err;
      throw damaged('does not decode', err);
    }
    const obj = frameMember(raw, e);
    if (!obj) throw damaged('is shorter than its chunk map says');
    return obj;
  }

  private evictFrames(): void {
    for (const [key, f] of this.frames) {
      if (this.frameBytes <= FRAME_CACHE_BYTES || this.frames.size <= 1) break;
      if (!f.bytes) continue;
      this.frames.delete(key);
      this.frameBytes -= f.bytes;
    }
  }

  // ---- packs and chunk maps (DESIGN 11) ----

  /** Store a pack under the digest of its bytes (computed by the writer); true if this call created it. */
  async putPack(digest: Digest, bytes: Uint8Array): Promise<boolean> {
    assertDigest(digest, 'pack digest');
    return this.call(() => this.writer.putIfAbsent(packKey(digest), bytes));
  }

  /** Store a version's chunk map; its digest goes into the ref. */
  async putChunkMap(entries: Iterable<ChunkMapEntry>): Promise<{ digest: Digest; map: ChunkMap }> {
    const { bytes, digest } = encodeChunkMap(entries);
    await this.call(() => this.writer.putIfAbsent(chunkMapKey(digest), bytes));
    const map = decodeChunkMap(bytes, digest);
    this.remember(map);
    return { digest, map };
  }

  /** A chunk map, decoded and validated (kept decoded for later lookups). */
  async getChunkMap(digest: Digest): Promise<ChunkMap> {
    assertDigest(digest, 'chunk map digest');
    const cached = this.loadedMaps.get(digest);
    if (cached) {
      this.loadedMaps.delete(digest);
      this.loadedMaps.set(digest, cached);
      return cached;
    }
    const bytes = await this.call(() => this.driver.get(chunkMapKey(digest)));
    if (!bytes) throw new KkError('NOT_FOUND', `chunk map ${digest} is missing from the store`, { hint: 'run `kk fsck --store <store>`', details: { digest } });
    const map = decodeChunkMap(bytes, digest);
    this.remember(map);
    return map;
  }

  private remember(map: ChunkMap): void {
    this.loadedMaps.delete(map.digest);
    this.loadedMaps.set(map.digest, map);
    if (this.loadedMaps.size > LOADED_MAPS) this.loadedMaps.delete(this.loadedMaps.keys().next().value!);
  }

  // ---- deltas (optional transfer hints) ----

  /** Store a delta object; true if this call created it. */
  async putDelta(target: Digest, base: Digest, object: Uint8Array): Promise<boolean> {
    assertDigest(target, 'chunk digest');
    assertDigest(base, 'chunk digest');
    return this.call(() => this.writer.putIfAbsent(deltaKey(target, base), object));
  }

  /** A delta object, or undefined if the store has none (callers then fetch the chunk). */
  async getDelta(target: Digest, base: Digest): Promise<Buffer | undefined> {
    assertDigest(target, 'chunk digest');
    assertDigest(base, 'chunk digest');
    return this.call(() => this.driver.get(deltaKey(target, base)));
  }

  // ---- manifests ----

  async putManifest(m: Manifest): Promise<Digest> {
    const { bytes, digest } = encodeManifest(m);
    const stored = this.config.manifests === 'brotli' && !this.driver.capabilities.packsOnly ? compressManifest(bytes) : bytes;
    await this.call(() => this.writer.putIfAbsent(manifestKey(digest), stored));
    return digest;
  }

  async getManifest(digest: Digest): Promise<Manifest> {
    assertDigest(digest, 'manifest digest');
    const bytes = await this.call(() => this.driver.get(manifestKey(digest)));
    if (!bytes) throw new KkError('NOT_FOUND', `manifest ${digest} is missing from the store`);
    return decodeManifest(bytes, digest);
  }

  // ---- refs (immutable versions) ----

  /**
   * Record a version, create-if-absent. The same manifest again is a success (idempotent);
   * a different one is VERSION_EXISTS.
   */
  async putRef(
    project: string,
    app: string,
    version: string,
    manifest: Digest,
    by = defaultActor(),
    created = new Date().toISOString(),
    chunkMap?: Digest,
  ): Promise<'created' | 'unchanged'> {
    assertProjectName(project);
    assertAppName(app);
    assertVersionName(version);
    assertDigest(manifest);
    const ref: Ref = chunkMap ? { manifest, chunkMap, created, by } : { manifest, created, by };
    if (chunkMap) assertDigest(chunkMap, 'chunk map digest');
    const key = refKey(project, app, version);
    if (await this.call(() => this.writer.putIfAbsent(key, Buffer.from(JSON.stringify(ref))))) return 'created';
    const existing = await this.getRef(project, app, version);
    if (existing?.manifest === manifest) return 'unchanged';
    throw new KkError('VERSION_EXISTS', `${project}/${app} version ${version} already exists with different content`, {
      hint: 'versions are immutable: push under a new version name',
      details: { project, app, version, existing: existing?.manifest, attempted: manifest },
    });
  }

  /**
   * Point a version at a rewritten chunk map (repack): the ref keeps its manifest, creation
   * time and author. Only when the ref still names `from`; false otherwise.
   */
  async replaceChunkMap(project: string, app: string, version: string, from: Digest, to: Digest): Promise<boolean> {
    assertDigest(to, 'chunk map digest');
    const ref = await this.getRef(project, app, version);
    if (!ref || ref.chunkMap !== from) return false;
    const next: Ref = { manifest: ref.manifest, chunkMap: to, created: ref.created, by: ref.by };
    await this.call(() => this.writer.put(refKey(project, app, version), Buffer.from(JSON.stringify(next))));
    this.useChunkMap(to);
    return true;
  }

  async getRef(project: string, app: string, version: string): Promise<Ref | undefined> {
    assertProjectName(project);
    assertAppName(app);
    assertVersionName(version);
    const raw = await this.call(() => this.driver.get(refKey(project, app, version)));
    return raw ? this.noteRef(parseJson<Ref>(raw, `ref ${project}/${app}/${version}`, isRef)) : undefined;
  }

  /** Remember a ref's chunk map: its packed chunks are found without a loose lookup. */
  private noteRef(ref: Ref): Ref {
    if (isDigest(ref.chunkMap)) this.useChunkMap(ref.chunkMap);
    else delete ref.chunkMap;
    return ref;
  }

  async deleteRef(project: string, app: string, version: string): Promise<void> {
    assertProjectName(project);
    assertAppName(app);
    assertVersionName(version);
    await this.call(() => this.pruner.delete(refKey(project, app, version)));
  }

  async listProjects(): Promise<string[]> {
    return (await this.call(() => this.driver.listChildren('refs/'))).filter(isProjectOrApp);
  }

  async listApps(project: string): Promise<string[]> {
    assertProjectName(project);
    return (await this.call(() => this.driver.listChildren(`refs/${project}/`))).filter(isProjectOrApp);
  }

  /** Every version of an app, newest first (by creation time, then name). */
  async listVersions(project: string, app: string): Promise<VersionInfo[]> {
    assertProjectName(project);
    assertAppName(app);
    const names = await this.call(() => this.driver.listChildren(`refs/${project}/${app}/`));
    const out: VersionInfo[] = [];
    await forEachLimit(names, 32, async (version) => {
      const raw = await this.call(() => this.driver.get(refKey(project, app, version)));
      if (raw) out.push({ project, app, version, ...this.noteRef(parseJson<Ref>(raw, `ref ${project}/${app}/${version}`, isRef)) });
    });
    return out.sort((a, b) => (a.created === b.created ? (a.version < b.version ? 1 : -1) : a.created < b.created ? 1 : -1));
  }

  // ---- channels (mutable pointers such as `promoted`) ----

  async getChannel(project: string, app: string, channel: string): Promise<Channel | undefined> {
    assertProjectName(project);
    assertAppName(app);
    assertChannelName(channel);
    const raw = await this.call(() => this.driver.get(channelKey(project, app, channel)));
    return raw ? parseJson<Channel>(raw, `channel ${project}/${app}/${channel}`, (v) => typeof (v as Channel).version === 'string') : undefined;
  }

  async listChannels(project: string, app: string): Promise<string[]> {
    assertProjectName(project);
    assertAppName(app);
    return this.call(() => this.driver.listChildren(`channels/${project}/${app}/`));
  }

  /** Point a channel at an existing version, keeping its history. */
  async setChannel(project: string, app: string, channel: string, version: string, by = defaultActor()): Promise<Channel> {
    const ref = await this.getRef(project, app, version);
    if (!ref) throw new KkError('NOT_FOUND', `${project}/${app} has no version ${version}`);
    const prev = await this.getChannel(project, app, channel);
    const entry: ChannelEntry = { version, manifest: ref.manifest, updated: new Date().toISOString(), by };
    const history = prev ? [{ version: prev.version, manifest: prev.manifest, updated: prev.updated, by: prev.by }, ...prev.history] : [];
    const next: Channel = { ...entry, history: history.slice(0, 100) };
    await this.call(() => this.writer.put(channelKey(project, app, channel), Buffer.from(JSON.stringify(next))));
    await this.flush();
    return next;
  }

  /**
   * Resolve what a user typed as a version: `latest`, a version name, or a channel name
   * (a version of that name wins over a channel).
   */
  async resolveVersion(project: string, app: string, spec: string): Promise<VersionInfo> {
    assertProjectName(project);
    assertAppName(app);
    if (spec === 'latest') {
      const [newest] = await this.listVersions(project, app);
      if (!newest) throw new KkError('NOT_FOUND', `${project}/${app} has no versions`, { hint: 'push one first' });
      return newest;
    }
    if (/^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/.test(spec)) {
      const ref = await this.getRef(project, app, spec);
      if (ref) return { project, app, version: spec, ...ref };
    }
    if (/^[a-z0-9][a-z0-9._-]{0,63}$/.test(spec)) {
      const ch = await this.getChannel(project, app, spec);
      if (ch) {
        const ref = await this.getRef(project, app, ch.version);
        if (ref) return { project, app, version: ch.version, ...ref };
      }
    }
    assertVersionName(spec);
    throw new KkError('NOT_FOUND', `${project}/${app} has no version or channel ${JSON.stringify(spec)}`, {
      hint: 'list versions with `kk versions`',
      details: { project, app, version: spec },
    });
  }
}

function frameKey(e: ChunkMapEntry): string {
  return `${e.pack}@${e.offset}`;
}

export function refKey(project: string, app: string, version: string): string {
  return `refs/${project}/${app}/${version}`;
}

export function channelKey(project: string, app: string, channel: string): string {
  return `channels/${project}/${app}/${channel}`;
}

function isProjectOrApp(name: string): boolean {
  return /^[a-z0-9][a-z0-9._-]{0,63}$/.test(name);
}

function isRef(v: unknown): boolean {
  return !!v && isDigest((v as Ref).manifest) && typeof (v as Ref).created === 'string';
}

function writable(driver: Driver): WriteDriver {
  if (!isWriteDriver(driver)) throw new KkError('FORBIDDEN', `the ${driver.name} store is read-only`);
  return driver;
}

function parseStoreConfig(raw: Uint8Array): StoreConfig {
  const c = parseJson<StoreConfig>(raw, STORE_CONFIG_KEY, (v) => (v as StoreConfig).format === STORE_FORMAT);
  assertChunkingParams(c.chunking);
  c.compression ??= { algorithm: 'none', level: 0, minSaving: 0.1 };
  if (c.packs !== undefined) assertPackPolicy(c.packs);
  if (c.manifests !== undefined && c.manifests !== 'brotli') {
    throw new KkError('STORE_INVALID', `${STORE_CONFIG_KEY}: manifests is ${JSON.stringify(c.manifests)}, this kk knows "brotli"`, { hint: 'upgrade kk to read this store' });
  }
  return c;
}

function parseJson<T>(raw: Uint8Array, what: string, ok: (v: unknown) => boolean): T {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(raw).toString('utf8'));
  } catch (cause) {
    throw new KkError('STORE_INVALID', `${what} is not valid JSON`, { cause });
  }
  if (!ok(v)) throw new KkError('STORE_INVALID', `${what} has an unexpected shape`);
  return v as T;
}

/** Run a driver call, turning anything but a KkError into BACKEND. */
export async function backend<T>(driver: Driver, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (isKkError(err) || err instanceof TypeError) throw err;
    throw new KkError('BACKEND', `${driver.name} store: ${(err as Error)?.message ?? String(err)}`, {
      cause: err,
      hint: 'check that the store is reachable and writable, then retry',
    });
  }
}

/** Group `items` in order into batches of at most `maxCount` items or about `maxBytes` bytes. */
export function* batches<T>(items: Iterable<T>, sizeOf: (item: T) => number, maxBytes: number, maxCount: number): Generator<T[]> {
  let batch: T[] = [];
  let bytes = 0;
  for (const item of items) {
    batch.push(item);
    bytes += sizeOf(item);
    if (bytes >= maxBytes || batch.length >= maxCount) {
      yield batch;
      batch = [];
      bytes = 0;
    }
  }
  if (batch.length) yield batch;
}

/** Run `fn` over `items` with at most `limit` in flight; the first error rejects. */
export async function forEachLimit<T>(items: Iterable<T>, limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  const it = items[Symbol.iterator]();
  let failed: unknown;
  const runners = Array.from({ length: Math.max(1, limit) }, async () => {
    for (let n = it.next(); !n.done && failed === undefined; n = it.next()) {
      try {
        await fn(n.value);
      } catch (err) {
        failed ??= err;
      }
    }
  });
  await Promise.all(runners);
  if (failed !== undefined) throw failed;
}

/** Every version of an app, newest first. */
export function listVersions(store: Store, project: string, app: string): Promise<VersionInfo[]> {
  return store.listVersions(project, app);
}
