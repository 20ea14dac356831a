// The kk store layout (DESIGN 3, PACKS.md) as an OCI object graph, shared by docker:// (a
// registry repository) and tar:// (an OCI image layout in one tar). Content-addressed keys
// (manifests/, packs/, chunkmaps/) are blobs by their own digest; a ref is a tagged image
// manifest (artifactType application/vnd.kk.version.v1, config = the ref JSON, layers = the kk
// manifest, the chunk map and its packs), a channel a tagged index pointing at the version's
// manifest; `kk-store.json` and every other key (locks, server state) is a tagged one-layer
// artifact. Tags that are not kk's are ignored. See packages/drivers/OCI.md.
import { createHash } from 'node:crypto';
import { KkError, forEachLimit } from '@kk/core';
import type { ByteRange, DriverCapabilities, ObjectInfo, PruneDriver } from '@kk/core';
import { checkKey, checkPrefix } from './keys.js';

/** What the store needs from a registry repository or an OCI layout. */
export interface OciBackend {
  /** Short name for messages: `registry 127.0.0.1:5000/kk` or `tar /x.tar`. */
  readonly where: string;
  blobSize(digest: string): Promise<number | undefined>;
  getBlob(digest: string, range?: ByteRange): Promise<Buffer | undefined>;
  /** Idempotent; the backend checks the digest. */
  putBlob(digest: string, data: Buffer): Promise<void>;
  getManifest(reference: string): Promise<{ digest: string; mediaType: string; body: Buffer } | undefined>;
  /** `reference` is a tag or the body's digest. */
  putManifest(reference: string, body: Buffer, mediaType: string): Promise<string>;
  /** Removes the manifest and every tag naming it; false when the backend refuses deletes. */
  deleteManifest(digest: string): Promise<boolean>;
  tags(): AsyncIterable<string>;
  flush?(): Promise<void>;
  close(): Promise<void>;
}

export const MEDIA = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  empty: 'application/vnd.oci.empty.v1+json',
  version: 'application/vnd.kk.version.v1',
  channel: 'application/vnd.kk.channel.v1',
  object: 'application/vnd.kk.object.v1',
  deleted: 'application/vnd.kk.deleted.v1',
  ref: 'application/vnd.kk.ref.v1+json',
  channelJson: 'application/vnd.kk.channel.v1+json',
  kkManifest: 'application/vnd.kk.manifest.v1+json',
  storeConfig: 'application/vnd.kk.store.v1+json',
  chunkMap: 'application/vnd.kk.chunkmap.v1',
  pack: 'application/vnd.kk.pack.v1',
  bytes: 'application/octet-stream',
} as const;

const ANNOTATION_KEY = 'vnd.kk.key';
const ANNOTATION_CREATED = 'org.opencontainers.image.created';
/** Base64 of an object small enough to live in its manifest (INLINE_MAX). */
const ANNOTATION_DATA = 'vnd.kk.data';
const INLINE_MAX = 8 * 1024;
/** Present once a tombstone was written: tag lookups then check for them. */
const TOMBSTONES_TAG = 'kk-tombstones';
const STORE_TAG = 'kk-store';
const EMPTY = Buffer.from('{}');
const EMPTY_DESC = { mediaType: MEDIA.empty, digest: sha256(EMPTY), size: 2 };

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const VERSION = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;
const BLOB_KEY = /^(manifests|packs|chunkmaps)\/([0-9a-f]{2})\/([0-9a-f]{64})$/;
const CHUNK_KEY = /^chunks\/[0-9a-f]{2}\/[0-9a-f]{64}$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

interface OciManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
  annotations?: Record<string, string>;
}

export type KeyPlace =
  | { kind: 'blob'; digest: string; layer: string }
  | { kind: 'chunk' }
  | { kind: 'ref'; tag: string }
  | { kind: 'channel'; tag: string }
  | { kind: 'object'; tag: string };

/** `_` -> `__`, `+` -> `_p`, `/` -> `_s`: injective, and the result is tag-safe. */
function escape(s: string): string {
  return s.replace(/[_+/]/g, (c) => (c === '_' ? '__' : c === '+' ? '_p' : '_s'));
}

function unescape(s: string): string | undefined {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c !== '_') {
      out += c;
      continue;
    }
    const n = s[++i];
    if (n === '_') out += '_';
    else if (n === 'p') out += '+';
    else if (n === 's') out += '/';
    else return undefined;
  }
  return out;
}

/** Where a store key lives. Throws INVALID_NAME for a ref or channel whose tag would exceed 128 characters. */
export function placeOf(key: string): KeyPlace {
  checkKey(key);
  if (key === 'kk-store.json') return { kind: 'object', tag: STORE_TAG };
  const blob = BLOB_KEY.exec(key);
  if (blob && blob[3]!.startsWith(blob[2]!)) {
    const layer = blob[1] === 'manifests' ? MEDIA.kkManifest : blob[1] === 'packs' ? MEDIA.pack : MEDIA.chunkMap;
    return { kind: 'blob', digest: `sha256:${blob[3]}`, layer };
  }
  if (CHUNK_KEY.test(key)) return { kind: 'chunk' };
  const s = key.split('/');
  if (s.length === 4 && (s[0] === 'refs' || s[0] === 'channels') && NAME.test(s[1]!) && NAME.test(s[2]!) && VERSION.test(s[3]!)) {
    const tag = `${s[0] === 'refs' ? 'r' : 'c'}_${s[1]}_${s[2]}_${escape(s[3]!)}`;
    if (tag.length > 128) {
      throw new KkError('INVALID_NAME', `"${key}" does not fit an OCI tag (${tag.length} > 128 characters)`, { hint: 'use shorter project, app and version names for docker:// and tar:// stores' });
    }
    return { kind: s[0] === 'refs' ? 'ref' : 'channel', tag };
  }
  const plain = `k_${escape(key)}`;
  if (TAG.test(plain)) return { kind: 'object', tag: plain };
  // Too long or other characters: a hashed tag; the key is in the manifest's annotations.
  return { kind: 'object', tag: `h_${createHash('sha256').update(key).digest('hex').slice(0, 48)}` };
}

/** The key a kk tag stands for; `null` for hashed tags (read the annotation); undefined for others' tags. */
export function keyOfTag(tag: string): string | null | undefined {
  if (tag === STORE_TAG) return 'kk-store.json';
  if (tag.startsWith('h_')) return /^h_[0-9a-f]{48}$/.test(tag) ? null : undefined;
  if (tag.startsWith('k_')) return unescape(tag.slice(2));
  const m = /^([rc])_([a-z0-9][a-z0-9.-]*)_([a-z0-9][a-z0-9.-]*)_(.+)$/.exec(tag);
  if (!m) return undefined;
  const name = unescape(m[4]!);
  if (name === undefined || !NAME.test(m[2]!) || !NAME.test(m[3]!) || !VERSION.test(name)) return undefined;
  return `${m[1] === 'r' ? 'refs' : 'channels'}/${m[2]}/${m[3]}/${name}`;
}

export interface OciStoreOptions {
  /** Driver name for messages and metrics. */
  name: 'docker' | 'tar';
  backend: OciBackend;
  /** Concurrent backend requests inside one call (listing, sizes). Default 8. */
  concurrency?: number;
}

export function createOciStore(opts: OciStoreOptions): PruneDriver {
  const b = opts.backend;
  const limit = opts.concurrency ?? 8;
  // Sizes and chunk-map pack lists this instance wrote: a ref's manifest then needs no HEADs.
  const sizes = new Map<string, number>();
  const chunkMapPacks = new Map<string, string[]>();
  let emptyUploaded: Promise<void> | undefined;
  let storeConfigBytes: Buffer | undefined;
  const capabilities = {
    rangeReads: true,
    // Tags are last-writer-wins: a registry has no create-if-absent and no compare-and-swap.
    atomicCreate: false,
    listing: true,
    deletion: true,
    // Existence of tag-backed keys costs one tag listing; blobs are one HEAD each.
    batchExists: false,
    // One blob per chunk is what registries rate-limit and refuse (thousands of layers): packs only.
    packsOnly: true,
  } satisfies DriverCapabilities;

  const ensureEmpty = () => (emptyUploaded ??= b.putBlob(EMPTY_DESC.digest, EMPTY).catch((err) => {
    emptyUploaded = undefined;
    throw err;
  }));

  async function putBlob(data: Buffer): Promise<Descriptor> {
    const digest = sha256(data);
    await b.putBlob(digest, data);
    sizes.set(digest, data.length);
    return { mediaType: MEDIA.bytes, digest, size: data.length };
  }

  async function blobSize(digest: string): Promise<number> {
    const known = sizes.get(digest);
    if (known !== undefined) return known;
    const size = await b.blobSize(digest);
    if (size === undefined) throw new KkError('NOT_FOUND', `${b.where}: blob ${digest} is missing`, { hint: 'push the version again; its objects were not all uploaded' });
    sizes.set(digest, size);
    return size;
  }

  async function putJsonManifest(reference: string, m: OciManifest): Promise<Descriptor> {
    const body = Buffer.from(JSON.stringify(m));
    const digest = await b.putManifest(reference, body, m.mediaType);
    return { mediaType: m.mediaType, digest, size: body.length };
  }

  /** The manifest a tag names, parsed; undefined when absent or a tombstone. */
  async function tagged(tag: string): Promise<{ digest: string; size: number; m: OciManifest } | undefined> {
    const res = await b.getManifest(tag);
    if (!res) return undefined;
    let m: OciManifest;
    try {
      m = JSON.parse(res.body.toString('utf8')) as OciManifest;
    } catch (err) {
      throw new KkError('STORE_INVALID', `${b.where}: tag ${tag} names a manifest that is not JSON`, { cause: err });
    }
    if (m.artifactType === MEDIA.deleted) return undefined;
    return { digest: res.digest, size: res.body.length, m };
  }

  /** The descriptor of the bytes a tag-backed key holds, or undefined. */
  async function dataOf(key: string, place: KeyPlace & { tag: string }): Promise<{ desc: Descriptor; inline?: Buffer; m: OciManifest; digest: string } | undefined> {
    const t = await tagged(place.tag);
    if (!t) return key === 'kk-store.json' ? storeConfigFromVersions() : undefined;
    if (place.kind === 'ref') {
      if (t.m.artifactType !== MEDIA.version || t.m.config?.mediaType !== MEDIA.ref) return undefined;
      return { desc: t.m.config, m: t.m, digest: t.digest };
    }
    if (place.kind === 'channel') {
      const entry = t.m.manifests?.find((d) => d.artifactType === MEDIA.channel);
      if (!entry) return undefined;
      const data = await b.getManifest(entry.digest);
      if (!data) throw new KkError('STORE_INVALID', `${b.where}: channel tag ${place.tag} names a missing manifest ${entry.digest}`);
      const m = JSON.parse(data.body.toString('utf8')) as OciManifest;
      if (!m.config || m.config.mediaType !== MEDIA.channelJson) return undefined;
      return { desc: m.config, m: t.m, digest: t.digest };
    }
    if (t.m.artifactType !== MEDIA.object || t.m.annotations?.[ANNOTATION_KEY] !== key) return undefined;
    const inline = t.m.annotations[ANNOTATION_DATA];
    if (inline !== undefined) {
      const bytes = Buffer.from(inline, 'base64');
      return { desc: { mediaType: MEDIA.bytes, digest: sha256(bytes), size: bytes.length }, inline: bytes, m: t.m, digest: t.digest };
    }
    const layer = t.m.layers?.[0];
    return layer ? { desc: layer, m: t.m, digest: t.digest } : undefined;
  }

  /**
   * A repository holding versions copied without the `kk-store` tag (`skopeo copy` of one
   * version): every version manifest carries the store's kk-store.json as a layer.
   */
  async function storeConfigFromVersions(): Promise<{ desc: Descriptor; m: OciManifest; digest: string } | undefined> {
    for await (const tag of b.tags()) {
      if (!tag.startsWith('r_') || keyOfTag(tag) === undefined) continue;
      const t = await tagged(tag);
      const layer = t?.m.artifactType === MEDIA.version ? t.m.layers?.find((l) => l.mediaType === MEDIA.storeConfig) : undefined;
      if (t && layer) return { desc: layer, m: t.m, digest: t.digest };
    }
    return undefined;
  }

  /** kk-store.json's bytes, read once. */
  async function storeConfig(): Promise<Buffer | undefined> {
    if (storeConfigBytes) return storeConfigBytes;
    const d = await dataOf('kk-store.json', placeOf('kk-store.json') as KeyPlace & { tag: string });
    if (!d) return undefined;
    storeConfigBytes = d.inline ?? (await b.getBlob(d.desc.digest));
    return storeConfigBytes;
  }

  function mtimeOf(m: OciManifest): number {
    const t = Date.parse(m.annotations?.[ANNOTATION_CREATED] ?? '');
    return Number.isFinite(t) ? t : 0;
  }

  async function versionManifest(key: string, data: Buffer, created: string): Promise<OciManifest> {
    let ref: { manifest?: unknown; chunkMap?: unknown };
    try {
      ref = JSON.parse(data.toString('utf8'));
    } catch (err) {
      throw new TypeError(`${key}: a ref must be JSON (${(err as Error).message})`);
    }
    const layers: Descriptor[] = [];
    const isDigest = (d: unknown): d is string => typeof d === 'string' && /^sha256:[0-9a-f]{64}$/.test(d);
    if (isDigest(ref.manifest)) layers.push({ mediaType: MEDIA.kkManifest, digest: ref.manifest, size: await blobSize(ref.manifest) });
    if (isDigest(ref.chunkMap)) {
      layers.push({ mediaType: MEDIA.chunkMap, digest: ref.chunkMap, size: await blobSize(ref.chunkMap) });
      let packs = chunkMapPacks.get(ref.chunkMap);
      if (!packs) {
        const bytes = await b.getBlob(ref.chunkMap);
        if (!bytes) throw new KkError('NOT_FOUND', `${b.where}: chunk map ${ref.chunkMap} is missing`);
        packs = packsOfChunkMap(bytes, ref.chunkMap, b.where);
      }
      const packSizes: number[] = new Array(packs.length);
      await forEachLimit(packs.map((p, i) => [p, i] as const), limit, async ([p, i]) => {
        packSizes[i] = await blobSize(p);
      });
      packs.forEach((p, i) => layers.push({ mediaType: MEDIA.pack, digest: p, size: packSizes[i]! }));
    }
    const store = await storeConfig();
    if (store) layers.push({ ...(await putBlob(store)), mediaType: MEDIA.storeConfig });
    const config = await putBlob(data);
    return {
      schemaVersion: 2,
      mediaType: MEDIA.manifest,
      artifactType: MEDIA.version,
      config: { ...config, mediaType: MEDIA.ref },
      layers: layers.length ? layers : [EMPTY_DESC],
      annotations: { [ANNOTATION_KEY]: key, [ANNOTATION_CREATED]: created },
    };
  }

  async function write(key: string, data: Buffer): Promise<void> {
    const place = placeOf(key);
    if (place.kind === 'chunk') {
      throw new KkError('STORE_INVALID', `${b.where}: ${opts.name} stores keep chunks in packs only, not as loose "${key}"`, { hint: 'use a kk version that writes packs (kk-store.json "packs": {"mode":"all"})' });
    }
    if (place.kind === 'blob') {
      if (sha256(data) !== place.digest) throw new TypeError(`"${key}" must hold bytes whose SHA-256 is its name`);
      await b.putBlob(place.digest, data);
      sizes.set(place.digest, data.length);
      if (place.layer === MEDIA.chunkMap) chunkMapPacks.set(place.digest, packsOfChunkMap(data, place.digest, b.where));
      return;
    }
    await ensureEmpty();
    if (key === 'kk-store.json') storeConfigBytes = data;
    const created = new Date().toISOString();
    if (place.kind === 'ref') {
      await putJsonManifest(place.tag, await versionManifest(key, data, created));
      return;
    }
    if (place.kind === 'channel') {
      const json = await putBlob(data);
      const dataManifest = await putJsonManifestByDigest({
        schemaVersion: 2,
        mediaType: MEDIA.manifest,
        artifactType: MEDIA.channel,
        config: { ...json, mediaType: MEDIA.channelJson },
        layers: [EMPTY_DESC],
        annotations: { [ANNOTATION_KEY]: key, [ANNOTATION_CREATED]: created },
      });
      const manifests: Descriptor[] = [{ ...dataManifest, artifactType: MEDIA.channel }];
      const version = channelVersion(data);
      const [, project, app] = key.split('/');
      if (version !== undefined && VERSION.test(version)) {
        const ref = placeOf(`refs/${project}/${app}/${version}`) as KeyPlace & { tag: string };
        const v = await tagged(ref.tag);
        if (v && v.m.artifactType === MEDIA.version) manifests.push({ mediaType: MEDIA.manifest, digest: v.digest, size: v.size, artifactType: MEDIA.version });
      }
      await putJsonManifest(place.tag, {
        schemaVersion: 2,
        mediaType: MEDIA.index,
        artifactType: MEDIA.channel,
        manifests,
        annotations: { [ANNOTATION_KEY]: key, [ANNOTATION_CREATED]: created },
      });
      return;
    }
    // Small objects (locks, leases, kk-store.json) ride in the manifest: one request to write or read.
    const small = data.length <= INLINE_MAX;
    const layer = small ? EMPTY_DESC : await putBlob(data);
    const annotations: Record<string, string> = { [ANNOTATION_KEY]: key, [ANNOTATION_CREATED]: created };
    if (small) annotations[ANNOTATION_DATA] = data.toString('base64');
    await putJsonManifest(place.tag, { schemaVersion: 2, mediaType: MEDIA.manifest, artifactType: MEDIA.object, config: EMPTY_DESC, layers: [layer], annotations });
  }

  async function putJsonManifestByDigest(m: OciManifest): Promise<Descriptor> {
    const body = Buffer.from(JSON.stringify(m));
    const digest = sha256(body);
    await b.putManifest(digest, body, m.mediaType);
    return { mediaType: m.mediaType, digest, size: body.length };
  }

  /** Every kk key the tags stand for (tombstoned ones included unless `verify`). */
  async function tagKeys(): Promise<{ keys: Map<string, string>; tombstones: boolean }> {
    const keys = new Map<string, string>();
    const hashed: string[] = [];
    let tombstones = false;
    for await (const tag of b.tags()) {
      if (tag === TOMBSTONES_TAG) tombstones = true;
      const key = keyOfTag(tag);
      if (key === null) hashed.push(tag);
      else if (key !== undefined) keys.set(key, tag);
    }
    await forEachLimit(hashed, limit, async (tag) => {
      const t = await tagged(tag);
      const key = t?.m.annotations?.[ANNOTATION_KEY];
      if (key) keys.set(key, tag);
    });
    return { keys, tombstones };
  }

  /** ObjectInfo of tag-backed keys under `prefix`, and of the blobs the versions reference. */
  async function* entries(prefix: string): AsyncGenerator<ObjectInfo> {
    const { keys } = await tagKeys();
    const matching = [...keys.keys()].filter((k) => k.startsWith(prefix));
    const infos: ObjectInfo[] = [];
    await forEachLimit(matching, limit, async (key) => {
      const place = placeOf(key) as KeyPlace & { tag: string };
      const d = await dataOf(key, place);
      if (d) infos.push({ key, size: d.desc.size, mtime: mtimeOf(d.m) });
    });
    yield* infos;
    // Blobs cannot be listed: those the versions reference are (unreferenced ones are freed by
    // the backend's own garbage collection or tar compaction).
    const blobPrefixes = ['manifests/', 'packs/', 'chunkmaps/'];
    if (!blobPrefixes.some((p) => p.startsWith(prefix) || prefix.startsWith(p))) return;
    const refs = [...keys.entries()].filter(([k]) => k.startsWith('refs/'));
    const seen = new Map<string, ObjectInfo>();
    await forEachLimit(refs, limit, async ([, tag]) => {
      const t = await tagged(tag);
      if (!t || t.m.artifactType !== MEDIA.version) return;
      for (const layer of t.m.layers ?? []) {
        const dir = layer.mediaType === MEDIA.kkManifest ? 'manifests' : layer.mediaType === MEDIA.pack ? 'packs' : layer.mediaType === MEDIA.chunkMap ? 'chunkmaps' : undefined;
        if (!dir) continue;
        const hex = layer.digest.slice(7);
        const k = `${dir}/${hex.slice(0, 2)}/${hex}`;
        if (k.startsWith(prefix) && !seen.has(k)) seen.set(k, { key: k, size: layer.size, mtime: mtimeOf(t.m) });
      }
    });
    yield* seen.values();
  }

  return {
    name: opts.name,
    capabilities,

    async get(key: string, range?: ByteRange) {
      const place = placeOf(key);
      if (place.kind === 'chunk') return undefined;
      if (place.kind === 'blob') {
        const r = clamp(range, sizes.get(place.digest));
        return r === null ? Buffer.alloc(0) : b.getBlob(place.digest, r);
      }
      const d = await dataOf(key, place);
      if (!d) return undefined;
      const r = clamp(range, d.desc.size);
      if (r === null) return Buffer.alloc(0);
      if (d.inline) return r ? d.inline.subarray(r.start, r.end + 1) : d.inline;
      const bytes = await b.getBlob(d.desc.digest, r);
      if (!bytes) throw new KkError('STORE_INVALID', `${b.where}: "${key}" names blob ${d.desc.digest}, which is missing`);
      return bytes;
    },

    async stat(key: string) {
      const place = placeOf(key);
      if (place.kind === 'chunk') return undefined;
      if (place.kind === 'blob') {
        const size = await b.blobSize(place.digest);
        return size === undefined ? undefined : { key, size, mtime: Date.now() };
      }
      const d = await dataOf(key, place);
      return d && { key, size: d.desc.size, mtime: mtimeOf(d.m) };
    },

    async hasMany(keys: readonly string[]) {
      const places = keys.map(placeOf);
      const out: boolean[] = new Array(keys.length).fill(false);
      const blobs = places.flatMap((p, i) => (p.kind === 'blob' ? [[p.digest, i] as const] : []));
      await forEachLimit(blobs, limit, async ([digest, i]) => {
        out[i] = (await b.blobSize(digest)) !== undefined;
      });
      if (places.some((p) => 'tag' in p)) {
        const { keys: present, tombstones } = await tagKeys();
        const checks: number[] = [];
        places.forEach((p, i) => {
          if ('tag' in p && present.has(keys[i]!)) {
            if (tombstones) checks.push(i);
            else out[i] = true;
          }
        });
        await forEachLimit(checks, limit, async (i) => {
          out[i] = (await dataOf(keys[i]!, places[i] as KeyPlace & { tag: string })) !== undefined;
        });
      }
      return out;
    },

    list(prefix: string) {
      checkPrefix(prefix);
      return entries(prefix);
    },

    async listChildren(prefix: string) {
      checkPrefix(prefix);
      if (prefix !== '' && !prefix.endsWith('/')) throw new TypeError(`listChildren prefix must be '' or end in '/': "${prefix}"`);
      const names = new Set<string>();
      const { keys, tombstones } = await tagKeys();
      const under = [...keys.keys()].filter((k) => k.startsWith(prefix));
      const live = tombstones ? await filterLimit(under, limit, async (k) => (await dataOf(k, placeOf(k) as KeyPlace & { tag: string })) !== undefined) : under;
      for (const k of live) names.add(k.slice(prefix.length).split('/')[0]!);
      if (['manifests/', 'packs/', 'chunkmaps/'].some((p) => p.startsWith(prefix) || prefix.startsWith(p))) {
        for await (const o of entries(prefix)) names.add(o.key.slice(prefix.length).split('/')[0]!);
      }
      return [...names].sort();
    },

    async put(key: string, data: Uint8Array) {
      await write(key, asBuffer(data));
    },

    async putIfAbsent(key: string, data: Uint8Array) {
      const place = placeOf(key);
      if (place.kind === 'blob') {
        if ((await b.blobSize(place.digest)) !== undefined) return false;
      } else if (place.kind !== 'chunk' && (await dataOf(key, place))) {
        return false;
      }
      await write(key, asBuffer(data));
      return true;
    },

    async delete(key: string) {
      const place = placeOf(key);
      // Blobs belong to every version that lists them; the backend's GC frees unreferenced ones.
      if (place.kind === 'blob' || place.kind === 'chunk') return;
      const t = await tagged(place.tag);
      if (!t) return;
      if (await b.deleteManifest(t.digest)) return;
      // The registry refuses DELETE (distribution's default): point the tag at a tombstone.
      await ensureEmpty();
      if (!(await b.getManifest(TOMBSTONES_TAG))) {
        await putJsonManifest(TOMBSTONES_TAG, { schemaVersion: 2, mediaType: MEDIA.manifest, artifactType: MEDIA.deleted, config: EMPTY_DESC, layers: [EMPTY_DESC], annotations: { [ANNOTATION_KEY]: TOMBSTONES_TAG } });
      }
      await putJsonManifest(place.tag, {
        schemaVersion: 2,
        mediaType: MEDIA.manifest,
        artifactType: MEDIA.deleted,
        config: EMPTY_DESC,
        layers: [EMPTY_DESC],
        annotations: { [ANNOTATION_KEY]: key, [ANNOTATION_CREATED]: new Date().toISOString() },
      });
    },

    ...(b.flush ? { flush: () => b.flush!() } : {}),

    async close() {
      await b.close();
    },
  };
}

/** The sorted pack digests a chunk map lists (PACKS.md: header, then P raw SHA-256 digests). */
export function packsOfChunkMap(bytes: Buffer, digest: string, where: string): string[] {
  if (bytes.length < 16 || bytes.toString('latin1', 0, 4) !== 'KKCM' || (bytes[4] !== 1 && bytes[4] !== 2)) {
    throw new KkError('STORE_INVALID', `${where}: chunk map ${digest} is not a kk chunk map (format 1 or 2)`);
  }
  const p = bytes.readUInt32BE(8);
  const n = bytes.readUInt32BE(12);
  // Format 2 entries (PACKS.md "Frames") are 52 bytes, format 1 entries 48.
  if (bytes.length !== 16 + 32 * p + (bytes[4] === 1 ? 48 : 52) * n) throw new KkError('STORE_INVALID', `${where}: chunk map ${digest} has the wrong length`);
  return Array.from({ length: p }, (_, i) => `sha256:${bytes.toString('hex', 16 + 32 * i, 48 + 32 * i)}`);
}

/**
 * The range cut to a blob of `size` bytes (when known): `null` when it starts past the end.
 * Registries answer such ranges with a broken 416 (distribution sends a Content-Length it does
 * not honour), so they are never sent.
 */
function clamp<R extends ByteRange | undefined>(range: R, size: number | undefined): R | null {
  if (!range || size === undefined) return range;
  if (range.start >= size) return null;
  return { start: range.start, end: Math.min(range.end, size - 1) } as R;
}

function channelVersion(data: Buffer): string | undefined {
  try {
    const v = (JSON.parse(data.toString('utf8')) as { version?: unknown }).version;
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}

async function filterLimit<T>(items: T[], limit: number, keep: (item: T) => Promise<boolean>): Promise<T[]> {
  const flags: boolean[] = new Array(items.length);
  await forEachLimit(items.map((item, i) => [item, i] as const), limit, async ([item, i]) => {
    flags[i] = await keep(item);
  });
  return items.filter((_, i) => flags[i]);
}

export function sha256(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}
