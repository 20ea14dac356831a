// The core Store: wraps any driver, validates names and digests before I/O, maps backend
// failures to KkError codes, and owns the key layout of DESIGN 3.
import { hostname, userInfo } from 'node:os';
import { type Digest, assertDigest, digestHex, isDigest } from './digest.js';
import { type Driver, type PruneDriver, type PullRecord, type WriteDriver, isPruneDriver, isWriteDriver } from './driver.js';
import { KkError, isKkError } from './errors.js';
import { type Manifest, decodeManifest, encodeManifest, manifestKey } from './manifest.js';
import { assertAppName, assertChannelName, assertProjectName, assertVersionName } from './names.js';
import { type ChunkingParams, assertChunkingParams, chunkingFor } from './chunking.js';
import { type CompressionPolicy, DEFAULT_COMPRESSION } from './hash/codec.js';

export const STORE_FORMAT = 'kk-store/1';
export const STORE_CONFIG_KEY = 'kk-store.json';

export interface StoreConfig {
  format: typeof STORE_FORMAT;
  chunking: ChunkingParams;
  compression: CompressionPolicy;
  created: string;
}

export interface Ref {
  manifest: Digest;
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

export class Store {
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
    const config: StoreConfig = {
      format: STORE_FORMAT,
      chunking: opts.chunking ?? chunkingFor(opts.avgChunkSize),
      compression: opts.compression ?? DEFAULT_COMPRESSION,
      created: new Date().toISOString(),
    };
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

  /** Digests (deduplicated) that the store lacks, in first-seen order. */
  async missingChunks(digests: Iterable<Digest>): Promise<Digest[]> {
    const unique = [...new Set(digests)];
    unique.forEach((d) => assertDigest(d, 'chunk digest'));
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
    return this.call(() => this.writer.putIfAbsent(chunkKey(digest), object));
  }

  /**
   * The stored object of a chunk, still encoded. Callers verify it while decoding (the Hasher's
   * decodeChunk / writeChunk); a missing chunk is NOT_FOUND.
   */
  async getChunkObject(digest: Digest): Promise<Buffer> {
    assertDigest(digest, 'chunk digest');
    const obj = await this.call(() => this.driver.get(chunkKey(digest)));
    if (!obj) throw new KkError('NOT_FOUND', `chunk ${digest} is missing from the store`, { details: { digest } });
    return obj;
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
    await this.call(() => this.writer.putIfAbsent(manifestKey(digest), bytes));
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
  ): Promise<'created' | 'unchanged'> {
    assertProjectName(project);
    assertAppName(app);
    assertVersionName(version);
    assertDigest(manifest);
    const ref: Ref = { manifest, created, by };
    const key = refKey(project, app, version);
    if (await this.call(() => this.writer.putIfAbsent(key, Buffer.from(JSON.stringify(ref))))) return 'created';
    const existing = await this.getRef(project, app, version);
    if (existing?.manifest === manifest) return 'unchanged';
    throw new KkError('VERSION_EXISTS', `${project}/${app} version ${version} already exists with different content`, {
      hint: 'versions are immutable: push under a new version name',
      details: { project, app, version, existing: existing?.manifest, attempted: manifest },
    });
  }

  async getRef(project: string, app: string, version: string): Promise<Ref | undefined> {
    assertProjectName(project);
    assertAppName(app);
    assertVersionName(version);
    const raw = await this.call(() => this.driver.get(refKey(project, app, version)));
    return raw ? parseJson<Ref>(raw, `ref ${project}/${app}/${version}`, isRef) : undefined;
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
      if (raw) out.push({ project, app, version, ...parseJson<Ref>(raw, `ref ${project}/${app}/${version}`, isRef) });
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
