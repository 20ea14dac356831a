// The chunk protocol the http driver speaks (under /api/v1/): the store's keys (DESIGN 3) as
// resources. Chunks, manifests, refs and channels have their own routes, each checked for what
// it is: a chunk's bytes against its digest before it is stored (422), a manifest against its
// digest and schema, a ref against an existing manifest whose chunks are all present, a
// channel against an existing version. Other keys (the conformance suite's, push leases, the
// GC lock) go through /api/v1/objects/<key> with rights by key class; server/ is never exposed.
// Packs and chunk maps (core PACKS.md) travel through /api/v1/objects/packs/.. and chunkmaps/..:
// each checked against its name before it is stored, read with Range like any object.
import { type Hash, createHash } from 'node:crypto';
import {
  type Channel,
  type Digest,
  KkError,
  type Ref,
  assertAppName,
  assertChannelName,
  assertProjectName,
  assertVersionName,
  channelKey,
  chunkKey,
  decodeChunkMap,
  decodeManifest,
  fileChunks,
  isDigest,
  manifestKey,
  packKey,
  refKey,
} from '@kk/core';
import { HttpError, badRequest, readBody, readJson, sendJson, tooLarge, writeChunk } from '../http.js';
import type { Call, ServerContext } from '../context.js';
import { hasPermission, scopeCovers } from '../tokens.js';


export type KeyClass =
  | { kind: 'config' }
  | { kind: 'chunk'; digest: Digest }
  | { kind: 'manifest'; digest: Digest }
  | { kind: 'ref'; project: string; app: string; version: string }
  | { kind: 'channel'; project: string; app: string; channel: string }
  | { kind: 'lease' }
  | { kind: 'gclock' }
  | { kind: 'server' }
  | { kind: 'delta' }
  | { kind: 'pack'; digest: Digest }
  | { kind: 'chunkmap'; digest: Digest }
  | { kind: 'other' };

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const VERSION = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;
const HEX64 = /^[0-9a-f]{64}$/;

/** What a store key is; a malformed key under a reserved prefix is a 400. */
export function classifyKey(key: string): KeyClass {
  const s = key.split('/');
  const bad = () => badRequest(`store key ${JSON.stringify(key)} does not fit the layout of ${s[0]}/`);
  switch (s[0]) {
    case 'kk-store.json':
      if (s.length !== 1) throw bad();
      return { kind: 'config' };
    case 'packs':
    case 'chunkmaps': {
      if (s.length !== 3 || !HEX64.test(s[2]!) || s[1] !== s[2]!.slice(0, 2)) throw bad();
      const digest = `sha256:${s[2]}` as Digest;
      return s[0] === 'packs' ? { kind: 'pack', digest } : { kind: 'chunkmap', digest };
    }
    case 'chunks':
    case 'manifests': {
      if (s.length !== 3 || !HEX64.test(s[2]!) || s[1] !== s[2]!.slice(0, 2)) throw bad();
      const digest = `sha256:${s[2]}` as Digest;
      return s[0] === 'chunks' ? { kind: 'chunk', digest } : { kind: 'manifest', digest };
    }
    case 'refs':
      if (s.length !== 4 || !NAME.test(s[1]!) || !NAME.test(s[2]!) || !VERSION.test(s[3]!)) throw bad();
      return { kind: 'ref', project: s[1]!, app: s[2]!, version: s[3]! };
    case 'channels':
      if (s.length !== 4 || !NAME.test(s[1]!) || !NAME.test(s[2]!) || !NAME.test(s[3]!)) throw bad();
      return { kind: 'channel', project: s[1]!, app: s[2]!, channel: s[3]! };
    case 'deltas':
      // deltas/<hh>/<target hex>.<base hex>: optional transfer hints, verified by whoever applies them.
      if (s.length !== 3 || !/^[0-9a-f]{64}\.[0-9a-f]{64}$/.test(s[2]!) || s[1] !== s[2]!.slice(0, 2)) throw bad();
      return { kind: 'delta' };
    case 'locks':
      if (s.length === 3 && s[1] === 'push') return { kind: 'lease' };
      if (s.length === 2 && s[1] === 'gc') return { kind: 'gclock' };
      throw bad();
    case 'server':
      return { kind: 'server' };
    default:
      return { kind: 'other' };
  }
}

const READ_META = ['pull', 'push', 'promote'] as const;

export function registerObjectRoutes(srv: ServerContext): void {
  const r = srv.router;
  const api = '/api/v1';
  const byKey = (key: (c: Call) => string) => ({
    get: { handler: (c: Call) => readObject(srv, c, key(c)) },
    put: { handler: (c: Call) => writeObject(srv, c, key(c)) },
    del: { handler: (c: Call) => deleteObject(srv, c, key(c)) },
  });
  const resources: [string, (c: Call) => string][] = [
    [`${api}/chunks/{digest}`, (c) => chunkKey(c.params.digest as Digest)],
    [`${api}/manifests/{digest}`, (c) => manifestKey(c.params.digest as Digest)],
    [`${api}/refs/{project}/{app}/{version}`, (c) => refKey(c.params.project!, c.params.app!, c.params.version!)],
    [`${api}/channels/{project}/{app}/{channel}`, (c) => channelKey(c.params.project!, c.params.app!, c.params.channel!)],
    [`${api}/objects/{key+}`, (c) => c.params.key!],
  ];
  r.add('POST', `${api}/chunks/missing`, { handler: (c) => missingChunks(srv, c) });
  r.add('POST', `${api}/chunks/batch`, { handler: (c) => batchGet(srv, c) });
  r.add('POST', `${api}/objects/exists`, { handler: (c) => exists(srv, c) });
  r.add('GET', `${api}/children`, { handler: (c) => children(srv, c) });
  r.add('GET', `${api}/list`, { handler: (c) => list(srv, c) });
  for (const [pattern, key] of resources) {
    const h = byKey(key);
    r.add('GET', pattern, h.get);
    r.add('PUT', pattern, h.put);
    r.add('DELETE', pattern, h.del);
  }
}

// ---- authorization by key class ----

function authorizeRead(srv: ServerContext, c: Call, cls: KeyClass): void {
  switch (cls.kind) {
    case 'config':
    case 'gclock':
      return; // any valid token: every client reads the store config; pushes check for GC
    case 'chunk':
    case 'delta':
    case 'pack':
    case 'chunkmap':
      return srv.requireUnscoped(c, ['pull', 'push']);
    case 'manifest':
      return; // checked against the manifest's own project/app once read
    case 'ref':
    case 'channel':
      return srv.requireAny(c, [...READ_META], cls.project, cls.app);
    case 'lease':
      return srv.requireUnscoped(c, ['push']);
    case 'server':
      throw serverKeys();
    case 'other':
      return srv.require(c, 'admin');
  }
}

const serverKeys = () => new KkError('FORBIDDEN', 'server/ keys are the server\'s own state and are not served');

// ---- reads ----

async function readObject(srv: ServerContext, c: Call, key: string): Promise<void> {
  const cls = classifyKey(key);
  authorizeRead(srv, c, cls);
  const head = c.req.method === 'HEAD';
  if (cls.kind === 'manifest') {
    const { manifest, bytes } = await srv.manifest(cls.digest);
    srv.requireAny(c, [...READ_META], manifest.project, manifest.app);
    // Reading a manifest is not a pull (a push reads its previous version's, a diff reads
    // them too): a completed pull reports itself through POST /api/v1/pulls.
    const range = parseRange(c.req.headers.range, bytes.length);
    return sendObject(c, bytes, bytes.length, Date.parse(manifest.created) || Date.now(), range, 'application/json');
  }
  // A whole chunk is one read (no stat first: it is immutable, its size is its length).
  if (cls.kind === 'chunk' && !head && !c.req.headers.range) {
    const data = await srv.store.driver.get(key);
    if (!data) throw new KkError('NOT_FOUND', `${key} does not exist`);
    c.res.writeHead(200, { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes', 'content-length': String(data.length) });
    c.res.end(data);
    return;
  }
  const info = await srv.store.driver.stat(key);
  if (!info) throw new KkError('NOT_FOUND', `${key} does not exist`);
  const range = parseRange(c.req.headers.range, info.size);
  if (head || range === 'unsatisfiable') return sendObject(c, undefined, info.size, info.mtime, range, 'application/octet-stream');
  const data = await srv.store.driver.get(key, range ?? undefined);
  if (!data) throw new KkError('NOT_FOUND', `${key} does not exist`);
  return sendObject(c, data, range ? info.size : data.length, info.mtime, range, 'application/octet-stream');
}

type Range = { start: number; end: number } | 'unsatisfiable' | undefined;

/** One `bytes=` range (multi-range requests are answered whole, as RFC 9110 allows). */
export function parseRange(header: string | undefined, size: number): Range {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'unsatisfiable';
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return undefined;
  }
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

async function sendObject(c: Call, data: Buffer | undefined, size: number, mtime: number, range: Range, type: string): Promise<void> {
  const headers: Record<string, string> = {
    'content-type': type,
    'accept-ranges': 'bytes',
    'x-kk-mtime': String(mtime),
    'last-modified': new Date(mtime).toUTCString(),
  };
  if (range === 'unsatisfiable') {
    c.res.writeHead(416, { ...headers, 'content-range': `bytes */${size}`, 'content-length': '0' });
    c.res.end();
    return;
  }
  if (range) {
    headers['content-range'] = `bytes ${range.start}-${range.end}/${size}`;
    headers['content-length'] = String(range.end - range.start + 1);
    c.res.writeHead(206, headers);
  } else {
    headers['content-length'] = String(size);
    c.res.writeHead(200, headers);
  }
  c.res.end(c.req.method === 'HEAD' ? undefined : data);
}

// ---- writes ----

async function writeObject(srv: ServerContext, c: Call, key: string): Promise<void> {
  const cls = classifyKey(key);
  const ifAbsent = c.req.headers['if-none-match'] === '*';
  const limit = srv.config.maxBodyBytes;
  switch (cls.kind) {
    case 'chunk':
      return putChunk(srv, c, cls.digest, ifAbsent);
    case 'manifest':
      return putManifest(srv, c, cls.digest, ifAbsent);
    case 'ref':
      return putRef(srv, c, cls.project, cls.app, cls.version, ifAbsent);
    case 'channel':
      return putChannel(srv, c, cls.project, cls.app, cls.channel, ifAbsent);
    case 'server':
      throw serverKeys();
    case 'lease':
      return putLease(srv, c, key, ifAbsent);
    case 'delta':
      srv.requireUnscoped(c, ['push']);
      break;
    case 'pack':
    case 'chunkmap':
      return putPackObject(srv, c, cls);
    default:
      srv.require(c, 'admin');
  }
  const body = await readBody(c.req, limit);
  if (ifAbsent) return created(c, await srv.store.writer.putIfAbsent(key, body), true);
  await srv.store.writer.put(key, body);
  return created(c, true, false);
}

/** 201 when this request created the object; 412 (create-if-absent) or 200 when it existed. */
function created(c: Call, isNew: boolean, ifAbsent: boolean): Promise<void> {
  if (!isNew && ifAbsent) {
    return sendJson(c.req, c.res, 412, { error: { code: 'EXISTS', message: 'the object already exists' } });
  }
  return sendJson(c.req, c.res, isNew ? 201 : 200, { created: isNew });
}

/** Longest a push lease may run before it must be refreshed (core refreshes hourly ones every 20 min). */
export const MAX_LEASE_MS = 2 * 3_600_000;

/**
 * A push lease (`locks/push/<id>`): `{holder, created, expires, chunks}`. It belongs to the
 * token that first wrote it: only that token (or a global admin) may refresh or delete it, and
 * it may not run longer than MAX_LEASE_MS from now. The server records the owner in the body.
 */
async function putLease(srv: ServerContext, c: Call, key: string, ifAbsent: boolean): Promise<void> {
  srv.requireUnscoped(c, ['push']);
  const body = await readJson<Record<string, unknown>>(c.req, srv.config.maxBodyBytes);
  const now = Date.now();
  if (typeof body.expires !== 'number' || !Number.isFinite(body.expires) || !Array.isArray(body.chunks) || body.chunks.some((d) => !isDigest(d))) {
    throw badRequest('a push lease is {"holder":..,"created":..,"expires":ms,"chunks":["sha256:..",..]}');
  }
  if (body.expires > now + MAX_LEASE_MS) {
    throw badRequest(`a push lease may run at most ${MAX_LEASE_MS / 60_000} minutes from now; refresh it instead`, { max_ms: MAX_LEASE_MS });
  }
  await checkLeaseOwner(srv, c, key);
  const bytes = Buffer.from(JSON.stringify({ ...body, token: c.principal.tokenId }));
  if (ifAbsent) return created(c, await srv.store.writer.putIfAbsent(key, bytes), true);
  await srv.store.writer.put(key, bytes);
  return created(c, true, false);
}

/** FORBIDDEN when the lease at `key` was taken by another token (global admins may always). */
async function checkLeaseOwner(srv: ServerContext, c: Call, key: string): Promise<void> {
  const raw = await srv.store.driver.get(key);
  if (!raw) return;
  let owner: unknown;
  try {
    owner = (JSON.parse(raw.toString('utf8')) as { token?: unknown }).token;
  } catch {
    owner = undefined;
  }
  if (owner === c.principal.tokenId) return;
  if (c.principal.scope.kind === 'global' && hasPermission(c.principal, 'admin')) return;
  throw new KkError('FORBIDDEN', `push lease ${key.slice('locks/push/'.length)} belongs to another token`, { hint: 'a push may only refresh or release its own lease' });
}

async function putChunk(srv: ServerContext, c: Call, digest: Digest, ifAbsent: boolean): Promise<void> {
  srv.requireUnscoped(c, ['push']);
  const max = srv.store.config.chunking.max;
  const { object, rawDigest } = await readChunkBody(c.req, Math.min(srv.config.maxBodyBytes, max + 1024));
  // A raw object is a header byte and the chunk itself: no chunk is larger than the store's max.
  if (object.length > 0 && object[0] === 0 && object.length - 1 > max) {
    throw new KkError('CHUNK_CORRUPT', `chunk ${digest} refused: ${object.length - 1} bytes is larger than the store's maximum chunk of ${max}`, { details: { digest, max } });
  }
  // A raw object was hashed while it arrived (once, no copy to the pool); a compressed one is
  // decoded and hashed in the pool. No stat first: clients upload what /chunks/missing called
  // missing, and the create-if-absent says whether it was there after all.
  if (rawDigest === undefined) await verifyChunkObject(srv, digest, object);
  else if (rawDigest !== digest) {
    throw new KkError('CHUNK_CORRUPT', `chunk ${digest} refused: its bytes hash to ${rawDigest}`, { details: { digest } });
  }
  const isNew = await srv.store.putChunkObject(digest, object);
  if (isNew) srv.metrics.chunksStored.inc();
  else srv.metrics.dedupHits.inc({ via: 'put' });
  return created(c, isNew, ifAbsent);
}

/**
 * The body of a chunk PUT, and for a raw object (header byte 0) the digest of its payload,
 * hashed part by part as the body arrives: the one hash of the chunk, on no second copy.
 * `rawDigest` is undefined for an empty body or a compressed object (the pool decodes those).
 * With `whole`, the digest of the whole body (a pack's name).
 */
async function readChunkBody(req: Call['req'], limit: number, whole = false): Promise<{ object: Buffer; rawDigest: Digest | undefined }> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(limit);
  const parts: Buffer[] = [];
  let size = 0;
  let hash: Hash | undefined;
  let header = -1;
  for await (const part of req as AsyncIterable<Buffer>) {
    if (!part.length) continue;
    size += part.length;
    if (size > limit) throw tooLarge(limit);
    parts.push(part);
    if (header < 0) {
      header = part[0]!;
      if (whole) hash = createHash('sha256').update(part);
      else if (header === 0) hash = createHash('sha256').update(part.subarray(1));
    } else hash?.update(part);
  }
  const object = parts.length === 1 ? parts[0]! : Buffer.concat(parts, size);
  return { object, rawDigest: hash ? (`sha256:${hash.digest('hex')}` as Digest) : undefined };
}

/**
 * A pack or a chunk map, create-if-absent, stored only if its bytes hash to its name (a pack is
 * hashed as it arrives; a chunk map is also parsed). The chunks inside a
 * pack are verified by whoever reads them, like every chunk (DESIGN 11).
 */
async function putPackObject(srv: ServerContext, c: Call, cls: { kind: 'pack' | 'chunkmap'; digest: Digest }): Promise<void> {
  srv.requireUnscoped(c, ['push']);
  const key = cls.kind === 'pack' ? packKey(cls.digest) : `chunkmaps/${cls.digest.slice(7, 9)}/${cls.digest.slice(7)}`;
  const { object: body, rawDigest } = await readChunkBody(c.req, srv.config.maxBodyBytes, cls.kind === 'pack');
  const [present] = await srv.store.driver.hasMany([key]);
  if (present) return created(c, false, true);
  if (cls.kind === 'pack') {
    // Hashed while it arrived (an empty body has no digest and matches no name).
    if (rawDigest !== cls.digest) throw new KkError('CHUNK_CORRUPT', `pack ${cls.digest} refused: its bytes do not match its name`, { details: { digest: cls.digest } });
  } else {
    try {
      decodeChunkMap(body, cls.digest);
    } catch (err) {
      throw new KkError('CHUNK_CORRUPT', `chunk map ${cls.digest} refused: ${(err as Error).message}`, { details: { digest: cls.digest } });
    }
  }
  return created(c, await srv.store.writer.putIfAbsent(key, body), true);
}

/**
 * Decode and hash an uploaded chunk object in the pool, off the main thread; CHUNK_CORRUPT
 * unless it decodes to at most `chunking.max` bytes with `digest`.
 */
export async function verifyChunkObject(srv: ServerContext, digest: Digest, object: Buffer): Promise<void> {
  const corrupt = (why: string) => new KkError('CHUNK_CORRUPT', `chunk ${digest} refused: ${why}`, { details: { digest } });
  if (object.length < 1) throw corrupt('empty body');
  if (object[0]! > 1) throw corrupt(`unknown encoding header ${object[0]}`);
  const r = await srv.hasher.decodeChunk(object, digest, undefined, srv.store.config.chunking.max);
  if (!r.ok) throw corrupt(`${r.reason} (or it is larger than the store's maximum chunk)`);
}

async function putManifest(srv: ServerContext, c: Call, digest: Digest, ifAbsent: boolean): Promise<void> {
  srv.requireUnscoped(c, ['push']);
  const bytes = await readBody(c.req, srv.config.maxBodyBytes);
  const manifest = decodeManifest(bytes, digest);
  srv.require(c, 'push', manifest.project, manifest.app);
  const isNew = await srv.store.writer.putIfAbsent(manifestKey(digest), bytes);
  srv.caches.manifests.set(digest, { manifest, bytes });
  return created(c, isNew, ifAbsent);
}

function parseRefBody(body: Record<string, unknown>): Ref {
  if (!isDigest(body.manifest) || typeof body.created !== 'string' || Number.isNaN(Date.parse(body.created))) {
    throw badRequest('a ref is {"manifest":"sha256:...","created":ISO time,"by":...}');
  }
  if (body.chunkMap !== undefined && !isDigest(body.chunkMap)) throw badRequest('a ref\'s "chunkMap" is "sha256:..." of a stored chunk map');
  const ref: Ref = { manifest: body.manifest, created: body.created, by: typeof body.by === 'string' ? body.by : '' };
  return isDigest(body.chunkMap) ? { manifest: ref.manifest, chunkMap: body.chunkMap, created: ref.created, by: ref.by } : ref;
}

async function putRef(srv: ServerContext, c: Call, project: string, app: string, version: string, ifAbsent: boolean): Promise<void> {
  assertVersionName(version);
  srv.require(c, 'push', project, app);
  const ref = parseRefBody(await readJson(c.req, 64 * 1024));
  const result = await createVersion(srv, c, project, app, version, ref);
  if (result === 'created') return created(c, true, ifAbsent);
  if (ifAbsent) return created(c, false, true);
  if (result === 'unchanged') return created(c, false, false);
  throw new KkError('VERSION_EXISTS', `${project}/${app} version ${version} already exists with different content`);
}

/**
 * Create a version: its manifest must exist, belong to `project/app`, and have every chunk in
 * the store. Emits `push` when created.
 */
export async function createVersion(
  srv: ServerContext,
  c: Call | undefined,
  project: string,
  app: string,
  version: string,
  ref: Ref,
): Promise<'created' | 'unchanged' | 'conflict'> {
  const key = refKey(project, app, version);
  const existing = await srv.store.getRef(project, app, version);
  if (existing) return existing.manifest === ref.manifest ? 'unchanged' : 'conflict';
  let manifest;
  try {
    ({ manifest } = await srv.manifest(ref.manifest));
  } catch (err) {
    if (err instanceof KkError && err.code === 'NOT_FOUND') {
      throw new KkError('MANIFEST_INVALID', `manifest ${ref.manifest} is not in the store: upload it before the ref`);
    }
    throw err;
  }
  if (manifest.project !== project || manifest.app !== app) {
    throw new KkError('MANIFEST_INVALID', `manifest ${ref.manifest} belongs to ${manifest.project}/${manifest.app}, not ${project}/${app}`);
  }
  const digests = manifest.files.flatMap((f) => fileChunks(f).map(([d]) => d));
  // Packed chunks are present when the version's chunk map lists them and its packs exist.
  const maps = [];
  if (ref.chunkMap) {
    const map = await srv.store.getChunkMap(ref.chunkMap).catch((err: unknown) => {
      if (err instanceof KkError && err.code === 'NOT_FOUND') throw new KkError('MANIFEST_INVALID', `chunk map ${ref.chunkMap} is not in the store: upload it before the ref`);
      throw err;
    });
    const have = await srv.store.driver.hasMany(map.packs.map(packKey));
    const gone = map.packs.filter((_, i) => !have[i]);
    if (gone.length) throw new KkError('MANIFEST_INVALID', `${gone.length} pack(s) of chunk map ${ref.chunkMap} are missing from the store`, { details: { missing: gone.slice(0, 100) } });
    maps.push(map);
  }
  const missing = await srv.store.missingChunks(digests, maps);
  if (missing.length) {
    throw new KkError('MANIFEST_INVALID', `${missing.length} chunk(s) of manifest ${ref.manifest} are missing from the store`, {
      details: { missing: missing.slice(0, 100) },
    });
  }
  // The chunks and the manifest are durable before the ref names them; the ref, its audit entry
  // and its webhook deliveries before the client hears that the version exists.
  await srv.durable();
  if (!(await srv.store.writer.putIfAbsent(key, Buffer.from(JSON.stringify(ref))))) {
    const now = await srv.store.getRef(project, app, version);
    return now?.manifest === ref.manifest ? 'unchanged' : 'conflict';
  }
  srv.caches.invalidateApp(project, app);
  // The index only remembers first-seen times (listings derive them from refs without it).
  await srv.listing.noteVersion(project, app, ref.created).catch((err) => srv.log.warn('listing index not updated', { project, app, err: String(err) }));
  await srv.activity(c, 'push', { project, app, version, manifest: ref.manifest, details: { files: manifest.files.length } });
  await srv.durable();
  return 'created';
}

async function putChannel(srv: ServerContext, c: Call, project: string, app: string, channel: string, ifAbsent: boolean): Promise<void> {
  assertChannelName(channel);
  srv.require(c, 'promote', project, app);
  const body = await readJson<Channel>(c.req, 1024 * 1024);
  if (typeof body.version !== 'string' || !isDigest(body.manifest) || !Array.isArray(body.history)) {
    throw badRequest('a channel is {"version":..,"manifest":"sha256:..","updated":..,"by":..,"history":[..]}');
  }
  assertVersionName(body.version);
  const ref = await srv.store.getRef(project, app, body.version);
  if (!ref) throw new KkError('NOT_FOUND', `${project}/${app} has no version ${body.version}`);
  if (ref.manifest !== body.manifest) throw new KkError('MANIFEST_INVALID', `version ${body.version} has manifest ${ref.manifest}, not ${body.manifest}`);
  const key = channelKey(project, app, channel);
  const prev = await srv.store.getChannel(project, app, channel);
  const bytes = Buffer.from(JSON.stringify(body));
  let isNew: boolean;
  if (ifAbsent) isNew = await srv.store.writer.putIfAbsent(key, bytes);
  else {
    await srv.store.writer.put(key, bytes);
    isNew = !prev;
  }
  if (!ifAbsent || isNew) {
    srv.caches.invalidateApp(project, app);
    await srv.activity(c, 'promote', { project, app, version: body.version, manifest: body.manifest, channel, previous: prev?.version });
    await srv.durable();
  }
  return created(c, isNew, ifAbsent);
}

// ---- deletes ----

async function deleteObject(srv: ServerContext, c: Call, key: string): Promise<void> {
  const cls = classifyKey(key);
  switch (cls.kind) {
    case 'ref':
      await deleteVersion(srv, c, cls.project, cls.app, cls.version);
      break;
    case 'channel':
      srv.require(c, 'admin', cls.project, cls.app);
      await srv.store.pruner.delete(key);
      srv.caches.invalidateApp(cls.project, cls.app);
      break;
    case 'lease':
      srv.requireUnscoped(c, ['push']);
      await checkLeaseOwner(srv, c, key);
      await srv.store.pruner.delete(key);
      break;
    case 'server':
      throw serverKeys();
    default:
      srv.require(c, 'admin');
      await srv.store.pruner.delete(key);
      if (cls.kind === 'manifest') srv.caches.manifests.delete(cls.digest);
  }
  c.res.writeHead(204);
  c.res.end();
}

/**
 * Delete a version (push rights on its app: the agent's retention needs them). A version a
 * channel points to is refused (409): move the channel first. Idempotent; emits `delete`.
 */
export async function deleteVersion(srv: ServerContext, c: Call | undefined, project: string, app: string, version: string, actor?: { token: string }): Promise<boolean> {
  assertProjectName(project);
  assertAppName(app);
  assertVersionName(version);
  if (c) srv.require(c, 'push', project, app);
  const ref = await srv.store.getRef(project, app, version);
  if (!ref) return false;
  for (const name of await srv.store.listChannels(project, app)) {
    const ch = await srv.store.getChannel(project, app, name);
    if (ch?.version === version) {
      throw new HttpError(409, 'PINNED', `${project}/${app} version ${version} is what channel "${name}" points to; promote another version first`, { channel: name });
    }
  }
  try {
    await srv.store.deleteRef(project, app, version);
  } catch (err) {
    // The ref may be gone even though the call failed (e.g. cleaning up after it): what
    // counts is whether the version still exists.
    if (await srv.store.getRef(project, app, version).catch(() => ref)) throw err;
  }
  srv.caches.invalidateApp(project, app);
  await srv.activity(c, 'delete', { project, app, version, manifest: ref.manifest }, actor);
  await srv.durable();
  return true;
}

// ---- batch endpoints ----

const MAX_BATCH = 10_000;

function digestList(body: Record<string, unknown>, max: number): Digest[] {
  const list = body.digests;
  if (!Array.isArray(list)) throw badRequest('expected {"digests":["sha256:...",...]}');
  if (list.length > max) throw badRequest(`at most ${max} digests per request`);
  for (const d of list) if (!isDigest(d)) throw new KkError('INVALID_NAME', `invalid digest ${JSON.stringify(d)}`);
  return list as Digest[];
}

async function missingChunks(srv: ServerContext, c: Call): Promise<void> {
  srv.requireUnscoped(c, ['pull', 'push']);
  const digests = digestList(await readJson(c.req, srv.config.maxBodyBytes), MAX_BATCH);
  const missing = await srv.store.missingChunks(digests);
  srv.metrics.dedupHits.inc({ via: 'missing' }, new Set(digests).size - missing.length);
  await sendJson(c.req, c.res, 200, { missing });
}

const BATCH_GET_MAX = 1000;
const MISSING_FRAME = 0xffffffff;

/**
 * Many chunk objects in one streamed response: for each requested digest, in order, a 4-byte
 * big-endian length and the stored object (still encoded), or 0xFFFFFFFF if it is missing.
 */
async function batchGet(srv: ServerContext, c: Call): Promise<void> {
  srv.requireUnscoped(c, ['pull']);
  const digests = digestList(await readJson(c.req, srv.config.maxBodyBytes), BATCH_GET_MAX);
  const fetches = new Map<number, Promise<Buffer | undefined>>();
  const WINDOW = 8;
  const fetchAt = (i: number) => {
    if (i < digests.length && !fetches.has(i)) fetches.set(i, srv.store.driver.get(chunkKey(digests[i]!)));
  };
  for (let i = 0; i < WINDOW; i++) fetchAt(i);
  // The first object is read before the status line, so a failing store is a proper 5xx.
  const first = digests.length ? await fetches.get(0)! : undefined;
  c.res.writeHead(200, { 'content-type': 'application/vnd.kk.chunk-batch', 'x-kk-count': String(digests.length) });
  for (let i = 0; i < digests.length; i++) {
    fetchAt(i + WINDOW);
    const obj = i === 0 ? first : await fetches.get(i)!;
    fetches.delete(i);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(obj ? obj.length : MISSING_FRAME);
    await writeChunk(c.res, len);
    if (obj) await writeChunk(c.res, obj);
  }
  c.res.end();
}

async function exists(srv: ServerContext, c: Call): Promise<void> {
  const body = await readJson(c.req, srv.config.maxBodyBytes);
  const keys = body.keys;
  if (!Array.isArray(keys) || keys.some((k) => typeof k !== 'string')) throw badRequest('expected {"keys":["...",...]}');
  if (keys.length > MAX_BATCH) throw badRequest(`at most ${MAX_BATCH} keys per request`);
  for (const key of keys as string[]) {
    const cls = classifyKey(key);
    if (cls.kind === 'manifest') srv.requireUnscoped(c, ['pull', 'push']);
    else authorizeRead(srv, c, cls);
  }
  const found = await srv.store.driver.hasMany(keys as string[]);
  await sendJson(c.req, c.res, 200, { exists: found });
}

/** Rights for listing under `prefix`: refs/ and channels/ by scope (filtered), else global admin. */
function listScope(srv: ServerContext, c: Call, prefix: string, recursive: boolean): (name: string) => boolean {
  if (prefix === 'server' || prefix.startsWith('server/')) throw serverKeys();
  const s = prefix.split('/');
  if ((s[0] === 'refs' || s[0] === 'channels') && prefix.endsWith('/')) {
    const p = c.principal;
    const reader = READ_META.some((perm) => hasPermission(p, perm));
    if (!reader) throw new KkError('FORBIDDEN', `token ${p.tokenId} cannot read versions`);
    if (s.length === 2 && !recursive) return (project) => p.scope.kind === 'global' || p.scope.project === project;
    if (s.length === 3 && !recursive) {
      if (!(p.scope.kind === 'global' || p.scope.project === s[1])) throw new KkError('FORBIDDEN', `token ${p.tokenId} does not cover project ${s[1]}`);
      return (app) => scopeCovers(p.scope, s[1], app);
    }
    if (s.length === 4) {
      srv.requireAny(c, [...READ_META], s[1], s[2]);
      return () => true;
    }
  }
  srv.require(c, 'admin');
  return () => true;
}

async function children(srv: ServerContext, c: Call): Promise<void> {
  const prefix = c.query.get('prefix') ?? '';
  if (prefix !== '' && !prefix.endsWith('/')) throw badRequest('prefix must be empty or end in "/"');
  const visible = listScope(srv, c, prefix, false);
  const names = await srv.store.driver.listChildren(prefix);
  await sendJson(c.req, c.res, 200, { children: names.filter((n) => (prefix === '' ? n !== 'server' : true) && visible(n)) });
}

async function list(srv: ServerContext, c: Call): Promise<void> {
  const prefix = c.query.get('prefix') ?? '';
  listScope(srv, c, prefix, true);
  const it = srv.store.driver.list(prefix)[Symbol.asyncIterator]();
  // The first entry is read before the status line, so a failing store is a proper 5xx.
  let next = await it.next();
  c.res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  let batch = '';
  for (; !next.done; next = await it.next()) {
    const o = next.value;
    if (o.key.startsWith('server/')) continue;
    batch += `${JSON.stringify({ key: o.key, size: o.size, mtime: o.mtime })}\n`;
    if (batch.length > 64 * 1024) {
      await writeChunk(c.res, Buffer.from(batch));
      batch = '';
    }
  }
  if (batch) await writeChunk(c.res, Buffer.from(batch));
  c.res.end();
}

