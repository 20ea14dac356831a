// Whole files over HTTP, for curl users and the seed's publish flow: `GET /file/...` streams a
// file of a version chunk by chunk (verified) and honours Range; `POST /upload/init`,
// `PUT /file/...?path=` (a whole file, chunked here) and `POST /upload/finish` publish one.
import { createWriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { once } from 'node:events';
import {
  type ChunkRef,
  type Digest,
  type FileEntry,
  KkError,
  MANIFEST_FORMAT,
  type Manifest,
  acquirePushLease,
  assertSafePath,
  assertVersionName,
  encodeManifest,
  fileChunks,
  forEachLimit,
  isDigest,
  parentsOf,
} from '@kk/core';
import { HttpError, badRequest, readJson, sendJson, tooLarge, writeChunk } from '../http.js';
import type { Call, ServerContext } from '../context.js';
import { type DeclaredFile, type UploadSession, Uploads } from '../uploads.js';
import { actorOf } from './api.js';
import { createVersion, parseRange } from './objects.js';

export function registerFileRoutes(srv: ServerContext): void {
  const uploads = srv.control.uploads;
  const r = srv.router;
  for (const base of ['', '/api/v1']) {
    r.add('GET', `${base}/file/{project}/{app}/{version}`, { handler: (c) => getFile(srv, c) });
    r.add('PUT', `${base}/file/{project}/{app}/{version}`, { handler: (c) => putFile(srv, uploads, c) });
    r.add('POST', `${base}/upload/init`, { handler: (c) => initUpload(srv, uploads, c) });
    r.add('POST', `${base}/upload/finish`, { handler: (c) => finishUpload(srv, uploads, c) });
  }
}

function pathParam(c: Call): string {
  const path = c.query.get('path');
  if (!path) throw badRequest('the path query parameter is required (?path=dir/file)');
  assertSafePath(path);
  return path;
}

// ---- download ----

async function getFile(srv: ServerContext, c: Call): Promise<void> {
  const { project, app, version } = c.params as { project: string; app: string; version: string };
  srv.require(c, 'pull', project, app);
  const path = pathParam(c);
  const v = await srv.store.resolveVersion(project, app, version);
  const cached = await srv.manifest(v.manifest);
  cached.byPath ??= new Map(cached.manifest.files.map((f) => [f.path, f]));
  const file = cached.byPath.get(path);
  if (!file) throw new KkError('NOT_FOUND', `${project}/${app} version ${v.version} has no file ${path}`);
  const range = parseRange(c.req.headers.range, file.size);
  const headers: Record<string, string> = {
    'content-type': 'application/octet-stream',
    'accept-ranges': 'bytes',
    etag: `"${file.sha256.slice(7)}"`,
    'last-modified': new Date(file.mtime).toUTCString(),
    'x-kk-sha256': file.sha256,
    'x-kk-version': v.version,
  };
  if (range === 'unsatisfiable') {
    c.res.writeHead(416, { ...headers, 'content-range': `bytes */${file.size}`, 'content-length': '0' });
    c.res.end();
    return;
  }
  const start = range ? range.start : 0;
  const end = range ? range.end : file.size - 1;
  if (range) headers['content-range'] = `bytes ${start}-${end}/${file.size}`;
  headers['content-length'] = String(Math.max(0, end - start + 1));
  if (c.req.method === 'HEAD') {
    c.res.writeHead(range ? 206 : 200, headers);
    c.res.end();
    return;
  }
  // One file is not a pull: a completed pull reports itself (POST /api/v1/pulls).

  // The chunks overlapping [start, end], fetched a few ahead and verified in the pool.
  const parts: { digest: Digest; size: number; from: number; to: number }[] = [];
  let offset = 0;
  for (const [digest, size] of fileChunks(file)) {
    const chunkEnd = offset + size - 1;
    if (chunkEnd >= start && offset <= end) parts.push({ digest, size, from: Math.max(start, offset) - offset, to: Math.min(end, chunkEnd) - offset });
    offset += size;
  }
  const AHEAD = 4;
  const pending: Promise<Buffer>[] = [];
  const fetchPart = (i: number) => {
    if (i < parts.length) pending[i] = rawChunk(srv, parts[i]!.digest, parts[i]!.size);
  };
  for (let i = 0; i < AHEAD; i++) fetchPart(i);
  // The first chunk is read before the status line, so a missing or corrupt one is a proper error.
  const first = parts.length ? await pending[0]! : undefined;
  c.res.writeHead(range ? 206 : 200, headers);
  for (let i = 0; i < parts.length; i++) {
    fetchPart(i + AHEAD);
    const raw = i === 0 ? first! : await pending[i]!;
    delete pending[i];
    const p = parts[i]!;
    await writeChunk(c.res, raw.subarray(p.from, p.to + 1));
  }
  c.res.end();
}

async function rawChunk(srv: ServerContext, digest: Digest, size: number): Promise<Buffer> {
  const obj = await srv.store.getChunkObject(digest);
  const r = await srv.hasher.decodeChunk(obj, digest, size);
  if (!r.ok) throw new KkError('CHUNK_CORRUPT', r.reason, { details: { digest } });
  return Buffer.from(r.raw.buffer, r.raw.byteOffset, r.raw.byteLength);
}

// ---- publish ----

async function refuseExisting(srv: ServerContext, project: string, app: string, version: string): Promise<void> {
  if (await srv.store.getRef(project, app, version)) {
    throw new KkError('VERSION_EXISTS', `${project}/${app} version ${version} already exists`, { hint: 'versions are immutable: publish under a new version name' });
  }
}

function parseMode(v: string | null): number {
  if (v === null) return 0o644;
  if (!/^[0-7]{3,4}$/.test(v)) throw badRequest('mode must be octal permission bits, e.g. 644 or 755');
  return parseInt(v, 8) & 0o777;
}

function parseMtime(v: string | null): number {
  if (v === null) return Date.now();
  if (!/^\d{1,15}$/.test(v)) throw badRequest('mtime must be milliseconds since the epoch');
  return Number(v);
}

/** `PUT /file/{project}/{app}/{version}?path=F[&mode=755][&mtime=ms][&sha256=..]`: one whole file. */
async function putFile(srv: ServerContext, uploads: Uploads, c: Call): Promise<void> {
  const { project, app, version } = c.params as { project: string; app: string; version: string };
  assertVersionName(version);
  srv.require(c, 'push', project, app);
  const path = pathParam(c);
  const mode = parseMode(c.query.get('mode'));
  const mtime = parseMtime(c.query.get('mtime'));
  const expected = c.query.get('sha256') ?? (c.req.headers['x-kk-sha256'] as string | undefined);
  if (expected !== undefined && expected !== null && !isDigest(expected)) throw badRequest('sha256 must be sha256:<64 hex>');
  const limit = srv.config.maxFileBytes;
  if (Number(c.req.headers['content-length'] ?? 0) > limit) throw tooLarge(limit);
  await refuseExisting(srv, project, app, version);

  // Everything is checked before the store is touched: a refused body leaves no trace.
  const tmp = join(await srv.tmpDir(), `put-${randomBytes(8).toString('hex')}`);
  try {
    await receive(c, tmp, limit);
    const [hashed] = await srv.hasher.hashFiles([tmp], srv.store.config.chunking);
    if (!hashed || !('sha256' in hashed)) throw new Error(`cannot hash the received file: ${(hashed as { reason?: string })?.reason}`);
    const sha256 = hashed.sha256 as Digest;
    const declared = (await uploads.get(project, app, version))?.declared.find((d) => d.path === path);
    for (const want of [expected, declared?.sha256]) {
      if (want && want !== sha256) throw new KkError('CHUNK_CORRUPT', `${path}: received bytes have ${sha256}, expected ${want}`, { details: { path, expected: want, actual: sha256 } });
    }
    const { session } = await uploads.open(project, app, version, c.principal.tokenId, srv.config.uploadTtlMs);
    const chunks = hashed.chunks as ChunkRef[];
    const offsets = new Map<Digest, { offset: number; size: number }>();
    let offset = 0;
    for (const [d, size] of chunks) {
      if (!offsets.has(d)) offsets.set(d, { offset, size });
      offset += size;
    }
    const missing = await srv.store.missingChunks(offsets.keys());
    srv.metrics.dedupHits.inc({ via: 'file' }, offsets.size - missing.length);
    let uploaded = 0;
    await forEachLimit(missing, 4, async (d) => {
      const at = offsets.get(d)!;
      const object = await srv.hasher.encodeChunk(tmp, at.offset, at.size, d, srv.store.config.compression);
      if (await srv.store.putChunkObject(d, object)) {
        uploaded++;
        srv.metrics.chunksStored.inc();
      }
    });
    const entry: FileEntry = { path, size: hashed.size, mode, mtime, sha256 };
    if (chunks.length > 1) entry.chunks = chunks;
    await uploads.putFile(session, entry);
    await sendJson(c.req, c.res, 201, { upload_id: session.id, path, size: hashed.size, sha256, chunks: chunks.length, chunks_uploaded: uploaded });
  } finally {
    await unlink(tmp).catch(() => {});
  }
}

/** Stream the request body into `file`, refusing (413) past `limit` bytes. */
async function receive(c: Call, file: string, limit: number): Promise<void> {
  const out = createWriteStream(file, { flags: 'wx' });
  const failed = once(out, 'error').then(([err]) => {
    throw err;
  });
  failed.catch(() => {});
  try {
    let n = 0;
    for await (const part of c.req as AsyncIterable<Buffer>) {
      n += part.length;
      if (n > limit) throw tooLarge(limit);
      if (!out.write(part)) await Promise.race([once(out, 'drain'), failed]);
    }
    out.end();
    await Promise.race([once(out, 'finish'), failed]);
  } catch (err) {
    out.destroy();
    throw err;
  }
}

interface InitFile extends DeclaredFile {
  mode: number;
  mtime: number;
  chunks?: ChunkRef[];
}

function parseDeclared(list: unknown, maxChunk: number): InitFile[] {
  if (list === undefined) return [];
  if (!Array.isArray(list)) throw badRequest('files must be a list');
  const seen = new Set<string>();
  return list.map((f: Record<string, unknown>) => {
    if (!f || typeof f !== 'object') throw badRequest('each file is {"path","size","sha256",...}');
    assertSafePath(f.path);
    if (seen.has(f.path)) throw badRequest(`${f.path} is listed twice`);
    seen.add(f.path);
    if (!Number.isSafeInteger(f.size) || (f.size as number) < 0) throw badRequest(`${f.path}: size must be a non-negative integer`);
    if (!isDigest(f.sha256)) throw badRequest(`${f.path}: sha256 must be sha256:<64 hex>`);
    const out: InitFile = {
      path: f.path,
      size: f.size as number,
      sha256: f.sha256,
      mode: typeof f.mode === 'number' ? f.mode & 0o777 : 0o644,
      mtime: typeof f.mtime === 'number' && Number.isSafeInteger(f.mtime) && f.mtime >= 0 ? f.mtime : Date.now(),
    };
    if (f.chunks !== undefined) {
      const chunks = f.chunks;
      if (!Array.isArray(chunks) || chunks.some((ch) => !Array.isArray(ch) || !isDigest(ch[0]) || !Number.isSafeInteger(ch[1]) || ch[1] < 1 || ch[1] > maxChunk)) {
        throw badRequest(`${f.path}: chunks must be [["sha256:..", size], ...] with sizes up to ${maxChunk}`);
      }
      if (chunks.reduce((s: number, ch: ChunkRef) => s + ch[1], 0) !== out.size) throw badRequest(`${f.path}: chunk sizes do not add up to size`);
      if (chunks.length === 1 && chunks[0][0] !== out.sha256) throw badRequest(`${f.path}: a single chunk must have the file's digest`);
      if (chunks.length > 1) out.chunks = chunks as ChunkRef[];
      else if (out.size > maxChunk) throw badRequest(`${f.path}: larger than one chunk, so chunks must be listed`);
    }
    return out;
  });
}

/**
 * `POST /upload/init` {project, app, version, files?: [{path, size, sha256, mode?, mtime?, chunks?}],
 * builder?, git_commit?, meta?}: opens (or resumes) the version's upload and says what is
 * missing: `missing` lists files to `PUT`, `missing_chunks` the chunks of files declared with
 * their chunk lists. Files the store already holds (by digest) need not be sent again.
 */
async function initUpload(srv: ServerContext, uploads: Uploads, c: Call): Promise<void> {
  const body = await readJson(c.req, srv.config.maxBodyBytes);
  const { project, app } = body as { project: unknown; app: unknown };
  const version = body.version ?? body.hash;
  if (typeof project !== 'string' || typeof app !== 'string' || typeof version !== 'string') throw badRequest('project, app and version are required');
  srv.require(c, 'push', project, app);
  assertVersionName(version);
  const chunking = srv.store.config.chunking;
  const declared = parseDeclared(body.files, chunking.max);
  const extra: Parameters<Uploads['open']>[5] = { declared: declared.map(({ path, size, sha256 }) => ({ path, size, sha256 })) };
  if (typeof body.builder === 'string') extra.builder = body.builder;
  if (typeof body.git_commit === 'string') extra.git_commit = body.git_commit;
  if (body.meta !== undefined) {
    if (!body.meta || typeof body.meta !== 'object' || Object.values(body.meta).some((v) => typeof v !== 'string')) throw badRequest('meta must map names to strings');
    extra.meta = body.meta as Record<string, string>;
  }
  await refuseExisting(srv, project, app, version);
  const { session, resumed } = await uploads.open(project, app, version, c.principal.tokenId, srv.config.uploadTtlMs, extra);

  let known: Map<string, ChunkRef[]> | undefined;
  const knownChunks = async (sha256: Digest, size: number): Promise<ChunkRef[] | undefined> => {
    known ??= await recentFiles(srv, project, app);
    return known.get(`${sha256}/${size}`);
  };
  const missing: string[] = [];
  const explicit: Digest[] = [];
  await forEachLimit(declared, 16, async (f) => {
    const have = await uploads.getFile(session, f.path);
    if (have?.sha256 === f.sha256) return;
    let chunks: ChunkRef[] | undefined = f.chunks;
    if (chunks) explicit.push(...chunks.map(([d]) => d));
    else if (f.size === 0) chunks = [];
    else if (f.size <= chunking.min) chunks = [[f.sha256, f.size]];
    else chunks = await knownChunks(f.sha256, f.size);
    if (!chunks || (!f.chunks && (await srv.store.missingChunks(chunks.map(([d]) => d))).length > 0)) {
      missing.push(f.path);
      return;
    }
    const entry: FileEntry = { path: f.path, size: f.size, mode: f.mode, mtime: f.mtime, sha256: f.sha256 };
    if (chunks.length > 1) entry.chunks = chunks;
    if (!f.chunks) srv.metrics.dedupHits.inc({ via: 'init' }, chunks.length);
    await uploads.putFile(session, entry);
  });
  const missingChunks = await srv.store.missingChunks(explicit);
  await sendJson(c.req, c.res, resumed ? 200 : 201, {
    upload_id: session.id,
    project,
    app,
    version,
    expires: session.expires,
    missing: missing.sort(),
    missing_chunks: missingChunks,
  });
}

/** Files of the app's newest versions and channel targets, by digest and size: what need not be re-sent. */
async function recentFiles(srv: ServerContext, project: string, app: string): Promise<Map<string, ChunkRef[]>> {
  const out = new Map<string, ChunkRef[]>();
  const versions = await srv.listing.versions(project, app).catch(() => []);
  const digests = new Set(versions.slice(0, 10).map((v) => v.manifest));
  for (const v of versions) if (v.channels.length) digests.add(v.manifest);
  for (const d of digests) {
    const { manifest } = await srv.manifest(d);
    for (const f of manifest.files) out.set(`${f.sha256}/${f.size}`, fileChunks(f));
  }
  return out;
}

/**
 * `POST /upload/finish` {upload_id} or {project, app, version}: write the manifest and the ref.
 * Idempotent: a retry of a finish that created the version (whether or not its answer got
 * through) answers 200 with `status: "unchanged"`, never a conflict.
 */
async function finishUpload(srv: ServerContext, uploads: Uploads, c: Call): Promise<void> {
  const body = await readJson(c.req, 64 * 1024);
  let session: UploadSession | undefined;
  if (typeof body.upload_id === 'string') {
    const done = await uploads.finished(body.upload_id);
    if (done) {
      srv.require(c, 'push', done.project, done.app);
      return sendJson(c.req, c.res, 200, { ...done, status: 'unchanged' });
    }
    session = await uploads.byId(body.upload_id);
  } else if (typeof body.project === 'string' && typeof body.app === 'string' && typeof (body.version ?? body.hash) === 'string') {
    const version = (body.version ?? body.hash) as string;
    srv.require(c, 'push', body.project, body.app);
    assertVersionName(version);
    session = await uploads.get(body.project, body.app, version);
  } else throw badRequest('upload_id (or project, app and version) is required');
  if (!session) throw new KkError('NOT_FOUND', 'no open upload with that id or for that version', { hint: 'POST /upload/init first; uploads expire' });
  const { project, app, version } = session;
  srv.require(c, 'push', project, app);

  const files = await uploads.files(session);
  const have = new Set(files.map((f) => f.path));
  const absent = session.declared.filter((d) => !have.has(d.path)).map((d) => d.path);
  if (absent.length) throw new HttpError(409, 'UPLOAD_INCOMPLETE', `${absent.length} declared file(s) have not been uploaded`, { missing: absent.slice(0, 1000) });
  const dirs = new Set<string>();
  for (const f of files) for (const p of parentsOf(f.path)) dirs.add(p);
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    project,
    app,
    version,
    created: new Date().toISOString(),
    builder: session.builder ?? actorOf(c),
    git_commit: session.git_commit ?? '',
    meta: session.meta ?? {},
    chunking: srv.store.config.chunking,
    dirs: [...dirs].map((path) => ({ path, mode: 0o755 })),
    files,
  };
  let { digest } = encodeManifest(manifest);
  const chunkDigests = [...new Set(files.flatMap((f) => fileChunks(f).map(([d]) => d)))];
  // Under a push lease, so a concurrent GC cannot sweep a chunk between this check and the ref.
  const lease = await acquirePushLease(srv.store, [...chunkDigests, digest], { waitMs: 60_000 });
  let status: 'created' | 'unchanged' | 'conflict';
  try {
    const missing = await srv.store.missingChunks(chunkDigests);
    if (missing.length) throw new HttpError(409, 'UPLOAD_INCOMPLETE', `${missing.length} chunk(s) are not in the store`, { missing_chunks: missing.slice(0, 1000) });
    await srv.store.putManifest(manifest);
    status = await createVersion(srv, c, project, app, version, { manifest: digest, created: manifest.created, by: actorOf(c) });
  } finally {
    await lease.release().catch(() => {});
  }
  if (status === 'conflict') {
    // The same upload finished before (a retry, or two finishes at once): its manifest differs
    // only in its creation time. Anything else is another upload's version.
    const existing = await srv.store.getRef(project, app, version);
    if (existing && (await sameUpload(srv, existing.manifest, manifest))) {
      status = 'unchanged';
      digest = existing.manifest;
    } else throw new KkError('VERSION_EXISTS', `${project}/${app} version ${version} already exists with different content`);
  }
  const result = { project, app, version, manifest: digest, files: files.length, bytes: files.reduce((s, f) => s + f.size, 0) };
  await uploads.finish(session, result).catch((err) => srv.log.warn('upload session not cleaned up', { upload: session.id, err: String(err) }));
  await sendJson(c.req, c.res, status === 'created' ? 201 : 200, { ...result, status });
}

/** Whether the stored manifest `digest` is `mine` but for its creation time and builder. */
async function sameUpload(srv: ServerContext, digest: Digest, mine: Manifest): Promise<boolean> {
  const { manifest } = await srv.manifest(digest);
  return encodeManifest({ ...manifest, created: mine.created, builder: mine.builder }).digest === encodeManifest(mine).digest;
}
