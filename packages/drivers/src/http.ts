// The http driver: a kk server (packages/server) as a store. Keys of the DESIGN 3 layout map to
// the server's chunk protocol (/api/v1/chunks, manifests, refs, channels), where the server
// checks each write; any other key goes to /api/v1/objects/<key>. undici keep-alive pool,
// batched existence checks, batch GET of chunks (getMany: framed, streamed responses),
// jittered retries on 5xx and network errors (core's withRetry), and HTTP statuses translated
// to KkError codes here, once.
import { hostname, userInfo } from 'node:os';
import { StringDecoder } from 'node:string_decoder';
import { Pool } from 'undici';
import { ERROR_CODES, KkError, type KkErrorCode, isTransient, withRetry } from '@kk/core';
import type { ByteRange, DriverCapabilities, ObjectInfo, PruneDriver, PullRecord, WriteDriver } from '@kk/core';
import { checkKey, checkPrefix } from './keys.js';

export interface HttpDriverOptions {
  /** Base URL of the server, `http(s)://host:port[/prefix]`. A user name in it is taken as the token. Required. */
  url: string;
  /** Bearer token. Default: the URL's user name, else `KK_TOKEN`. */
  token?: string;
  /** Sent as `X-Kk-Agent` (the audit log's agent id). Default: `KK_AGENT`, else `kk/<user>@<host>`. */
  agent?: string;
  /** Keep-alive connections to the server. Default 16. */
  connections?: number;
  /** Retries after a 5xx or network error, with full-jitter exponential backoff. Default 4. */
  retries?: number;
  /** Base delay of the backoff in ms. Default 100. */
  retryBaseMs?: number;
  /** Time to wait for response headers, and between body bytes, in ms. Default 120000. */
  timeoutMs?: number;
  /** Offer `delete` (a PruneDriver). Default true; `openHttpDriver` sets it from the token's rights. */
  deletion?: boolean;
}

const API = '/api/v1';
const EXISTS_BATCH = 10_000;
/** Digests per batch GET (the server's limit is 1000) and batch requests in flight at once. */
const BATCH_GET = 1000;
const BATCH_GET_PARALLEL = 4;
const MISSING_FRAME = 0xffffffff;

/** What the http driver offers beyond the driver contract. */
export interface HttpBatchGet {
  /** Many objects in order (undefined: absent); chunks in few batch requests. */
  getMany(keys: readonly string[]): Promise<(Buffer | undefined)[]>;
}

export function createHttpDriver(opts: HttpDriverOptions): (WriteDriver | PruneDriver) & HttpBatchGet {
  const base = parseBase(opts.url);
  const token = opts.token ?? base.token ?? process.env.KK_TOKEN;
  const timeout = opts.timeoutMs ?? 120_000;
  const pool = new Pool(base.origin, { connections: opts.connections ?? 16, keepAliveTimeout: 30_000, headersTimeout: timeout, bodyTimeout: timeout });
  const headers: Record<string, string> = { 'x-kk-agent': opts.agent ?? process.env.KK_AGENT ?? defaultAgent(), 'user-agent': 'kk-http-driver' };
  if (token) headers.authorization = `Bearer ${token}`;
  const capabilities: DriverCapabilities = {
    rangeReads: true,
    // The server's create-if-absent is its store's, and every kk store driver creates atomically.
    atomicCreate: true,
    listing: true,
    deletion: opts.deletion ?? true,
    batchExists: true,
  };

  async function send(method: string, path: string, extra: { body?: Buffer | string; headers?: Record<string, string> } = {}) {
    let res;
    try {
      res = await pool.request({
        method: method as 'GET',
        path: base.prefix + path,
        headers: { ...headers, ...extra.headers },
        body: extra.body ?? null,
      });
    } catch (err) {
      throw new KkError('BACKEND', `kk server ${base.origin}: ${(err as Error).message}`, { cause: err, hint: 'check that the server is running and reachable' });
    }
    return res;
  }

  async function exchange(method: string, path: string, extra: { body?: Buffer | string; headers?: Record<string, string>; ok?: number[] } = {}) {
    const res = await send(method, path, extra);
    let body: Buffer;
    try {
      body = Buffer.from(await res.body.arrayBuffer());
    } catch (err) {
      throw new KkError('BACKEND', `kk server ${base.origin}: ${(err as Error).message}`, { cause: err });
    }
    if (!(extra.ok ?? [200, 201, 204]).includes(res.statusCode)) throw statusError(res.statusCode, body, `${method} ${path}`);
    return { status: res.statusCode, headers: res.headers, body };
  }

  async function json<T>(method: string, path: string, value?: unknown): Promise<T> {
    const extra = value === undefined ? {} : { body: JSON.stringify(value), headers: { 'content-type': 'application/json' } };
    const { body } = await exchange(method, path, extra);
    return JSON.parse(body.toString('utf8')) as T;
  }

  const driver = {
    name: 'http',
    capabilities,

    async get(key: string, range?: ByteRange) {
      const extra = range ? { headers: { range: `bytes=${range.start}-${range.end}` }, ok: [200, 206, 404, 416] } : { ok: [200, 404] };
      const { status, body } = await exchange('GET', pathOf(key), extra);
      if (status === 404) return undefined;
      if (status === 416) return Buffer.alloc(0);
      return body;
    },

    async stat(key: string) {
      const { status, headers: h } = await exchange('HEAD', pathOf(key), { ok: [200, 404] });
      if (status === 404) return undefined;
      const mtime = Number(h['x-kk-mtime'] ?? Date.parse(String(h['last-modified'] ?? '')));
      return { key, size: Number(h['content-length'] ?? 0), mtime: Number.isFinite(mtime) ? mtime : 0 } satisfies ObjectInfo;
    },

    async hasMany(keys: readonly string[]) {
      keys.forEach(checkKey);
      const out: boolean[] = [];
      for (let i = 0; i < keys.length; i += EXISTS_BATCH) {
        const batch = keys.slice(i, i + EXISTS_BATCH);
        const digests = batch.map(chunkDigestOf);
        if (digests.every((d) => d !== undefined)) {
          const { missing } = await json<{ missing: string[] }>('POST', `${API}/chunks/missing`, { digests });
          const absent = new Set(missing);
          out.push(...digests.map((d) => !absent.has(d!)));
        } else {
          const { exists } = await json<{ exists: boolean[] }>('POST', `${API}/objects/exists`, { keys: batch });
          out.push(...exists);
        }
      }
      return out;
    },

    async *list(prefix: string): AsyncIterable<ObjectInfo> {
      checkPrefix(prefix);
      const res = await send('GET', `${API}/list?prefix=${encodeURIComponent(prefix)}`);
      if (res.statusCode !== 200) throw statusError(res.statusCode, Buffer.from(await res.body.arrayBuffer()), `list ${prefix}`);
      let rest = '';
      const utf8 = new StringDecoder('utf8');
      try {
        for await (const part of res.body as AsyncIterable<Buffer>) {
          rest += utf8.write(part);
          const lines = rest.split('\n');
          rest = lines.pop()!;
          for (const line of lines) if (line) yield JSON.parse(line) as ObjectInfo;
        }
      } catch (err) {
        if (err instanceof KkError) throw err;
        throw new KkError('BACKEND', `kk server ${base.origin}: listing ${prefix} broke off: ${(err as Error).message}`, { cause: err });
      }
      if (rest) yield JSON.parse(rest) as ObjectInfo;
    },

    async listChildren(prefix: string) {
      if (prefix !== '' && !prefix.endsWith('/')) throw new TypeError(`listChildren prefix must end in "/", got "${prefix}"`);
      checkPrefix(prefix);
      return (await json<{ children: string[] }>('GET', `${API}/children?prefix=${encodeURIComponent(prefix)}`)).children;
    },

    async put(key: string, data: Uint8Array) {
      await exchange('PUT', pathOf(key), { body: asBuffer(data), headers: { 'content-type': 'application/octet-stream' } });
    },

    async putIfAbsent(key: string, data: Uint8Array) {
      const { status } = await exchange('PUT', pathOf(key), {
        body: asBuffer(data),
        headers: { 'content-type': 'application/octet-stream', 'if-none-match': '*' },
        ok: [200, 201, 412],
      });
      return status === 201;
    },

    async delete(key: string) {
      await exchange('DELETE', pathOf(key), { ok: [200, 204, 404] });
    },

    /** A completed pull, for the server's audit log and `pull` event (`POST /api/v1/pulls`). */
    async recordPull(event: PullRecord) {
      await json('POST', `${API}/pulls`, {
        project: event.project,
        app: event.app,
        version: event.version,
        manifest: event.manifest,
        agent: event.agent,
        up_to_date: event.upToDate,
      });
    },

    async close() {
      await pool.close();
    },
  } satisfies PruneDriver;

  const retries = opts.retries ?? 4;
  const retryBaseMs = opts.retryBaseMs ?? 100;
  const retried = withRetry(driver, { retries, baseMs: retryBaseMs });
  /** getMany is no method core's wrappers know: its batch requests retry here, as withRetry's do. */
  async function again<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (attempt >= retries || !isTransient(err)) throw err;
        await new Promise((r) => setTimeout(r, Math.random() * retryBaseMs * 2 ** attempt));
      }
    }
  }
  /** The server refused a batch GET (older server, token without pull rights): single GETs from then on. */
  let noBatch = false;

  /**
   * Many objects at once, in order (undefined: absent). Chunks come through the server's batch
   * GET (POST /api/v1/chunks/batch: one framed, streamed response per <= 1000 chunks), other
   * keys one by one. A server without it (older, or a token without pull rights) gets single
   * GETs; the driver remembers that.
   */
  async function getMany(keys: readonly string[]): Promise<(Buffer | undefined)[]> {
    keys.forEach(checkKey);
    const out: (Buffer | undefined)[] = new Array(keys.length).fill(undefined);
    const chunks: number[] = [];
    const single: number[] = [];
    keys.forEach((k, i) => (!noBatch && chunkDigestOf(k) ? chunks : single).push(i));
    const slices: number[][] = [];
    for (let i = 0; i < chunks.length; i += BATCH_GET) slices.push(chunks.slice(i, i + BATCH_GET));
    await forEach(slices, BATCH_GET_PARALLEL, async (slice) => {
      const got = await again(() => batchChunks(slice.map((i) => chunkDigestOf(keys[i]!)!)));
      if (got) slice.forEach((i, j) => (out[i] = got[j]));
      else single.push(...slice);
    });
    await forEach(single, 8, async (i) => {
      out[i] = await retried.get(keys[i]!);
    });
    return out;
  }

  /** One batch GET; undefined when the server does not offer it to this token (then never again). */
  async function batchChunks(digests: string[]): Promise<(Buffer | undefined)[] | undefined> {
    if (noBatch) return undefined;
    const res = await send('POST', `${API}/chunks/batch`, { body: JSON.stringify({ digests }), headers: { 'content-type': 'application/json' } });
    if (res.statusCode !== 200 || res.headers['content-type'] !== BATCH_TYPE) {
      const body = Buffer.from(await res.body.arrayBuffer().catch(() => new ArrayBuffer(0)));
      // 404/405: a server before the batch route; 403: a push-only token (single GETs allow
      // it); a 200 that is not frames: something in between answered for the server.
      if ([200, 403, 404, 405].includes(res.statusCode)) {
        noBatch = true;
        return undefined;
      }
      throw statusError(res.statusCode, body, `batch GET of ${digests.length} chunks`);
    }
    try {
      return await readFrames(res.body as AsyncIterable<Buffer>, digests.length);
    } catch (err) {
      if (err instanceof KkError) throw err;
      throw new KkError('BACKEND', `kk server ${base.origin}: batch GET broke off: ${(err as Error).message}`, { cause: err });
    }
  }

  const withBatch = Object.assign(retried, { getMany });
  if (capabilities.deletion) return withBatch;
  const { delete: _delete, ...readWrite } = withBatch;
  return readWrite satisfies WriteDriver & HttpBatchGet;
}

/**
 * Open the http driver for a server, asking it first who the token is: the driver offers
 * deletion only to tokens that can delete something (push or admin). AUTH if the server
 * refuses the token.
 */
export async function openHttpDriver(opts: HttpDriverOptions): Promise<WriteDriver | PruneDriver> {
  if (opts.deletion !== undefined) return createHttpDriver(opts);
  const base = parseBase(opts.url);
  const token = opts.token ?? base.token ?? process.env.KK_TOKEN;
  const pool = new Pool(base.origin, { connections: 1 });
  let permissions: string[];
  try {
    const res = await pool.request({ method: 'GET', path: `${base.prefix}${API}/whoami`, headers: token ? { authorization: `Bearer ${token}` } : {} });
    const body = Buffer.from(await res.body.arrayBuffer());
    if (res.statusCode !== 200) throw statusError(res.statusCode, body, 'whoami');
    permissions = (JSON.parse(body.toString('utf8')) as { permissions: string[] }).permissions;
  } catch (err) {
    if (err instanceof KkError || err instanceof TypeError) throw err;
    throw new KkError('BACKEND', `kk server ${base.origin}: ${(err as Error).message}`, { cause: err, hint: 'check that the server is running and reachable' });
  } finally {
    await pool.close();
  }
  return createHttpDriver({ ...opts, deletion: permissions.some((p) => p === 'push' || p === 'admin') });
}

// ---- keys and paths ----

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const VERSION = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

function chunkDigestOf(key: string): string | undefined {
  const m = /^chunks\/([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(key);
  return m && m[2]!.startsWith(m[1]!) ? `sha256:${m[2]}` : undefined;
}

/** The server path of a key: the chunk protocol's route for layout keys, else /objects/<key>. */
function pathOf(key: string): string {
  checkKey(key);
  const chunk = chunkDigestOf(key);
  if (chunk) return `${API}/chunks/${chunk}`;
  const m = /^manifests\/([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(key);
  if (m && m[2]!.startsWith(m[1]!)) return `${API}/manifests/sha256:${m[2]}`;
  const s = key.split('/');
  if (s.length === 4 && (s[0] === 'refs' || s[0] === 'channels') && NAME.test(s[1]!) && NAME.test(s[2]!) && (s[0] === 'refs' ? VERSION : NAME).test(s[3]!)) {
    return `${API}/${s[0]}/${s[1]}/${s[2]}/${s[3]}`;
  }
  return `${API}/objects/${s.map(encodeURIComponent).join('/')}`;
}

// ---- batch GET frames ----

const BATCH_TYPE = 'application/vnd.kk.chunk-batch';
/** No stored chunk object is this large (chunks are at most a few MiB): a frame that says so is garbage. */
const MAX_FRAME = 256 * 1024 * 1024;

/**
 * The frames of a batch GET, one per requested digest in order: a 4-byte big-endian length and
 * the stored object, or 0xFFFFFFFF for a missing one. Each object is copied once, into a Buffer
 * of its own (the hasher may take it over).
 */
async function readFrames(body: AsyncIterable<Buffer>, count: number): Promise<(Buffer | undefined)[]> {
  const out: (Buffer | undefined)[] = [];
  const len = Buffer.alloc(4);
  let lenHave = 0;
  let cur: Buffer | undefined;
  let curHave = 0;
  for await (const part of body) {
    let p = 0;
    while (p < part.length) {
      if (cur) {
        const n = Math.min(cur.length - curHave, part.length - p);
        part.copy(cur, curHave, p, p + n);
        curHave += n;
        p += n;
        if (curHave === cur.length) {
          out.push(cur);
          cur = undefined;
        }
        continue;
      }
      if (out.length === count) throw new KkError('BACKEND', `batch GET: the server sent more than the ${count} objects asked for`);
      const n = Math.min(4 - lenHave, part.length - p);
      part.copy(len, lenHave, p, p + n);
      lenHave += n;
      p += n;
      if (lenHave < 4) continue;
      lenHave = 0;
      const size = len.readUInt32BE(0);
      if (size === MISSING_FRAME) out.push(undefined);
      else if (size > MAX_FRAME) throw new KkError('BACKEND', `batch GET: the server announced an object of ${size} bytes, more than any chunk`);
      else if (size === 0) out.push(Buffer.alloc(0));
      else {
        cur = Buffer.allocUnsafeSlow(size);
        curHave = 0;
      }
    }
  }
  if (cur || lenHave || out.length !== count) throw new KkError('BACKEND', `batch GET: the response ended after ${out.length} of ${count} objects`);
  return out;
}

/** Run `fn` over `items`, at most `limit` at once. */
async function forEach<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

// ---- errors ----

const CODE_OF_STATUS: Record<number, KkErrorCode> = {
  401: 'AUTH',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  409: 'VERSION_EXISTS',
  422: 'CHUNK_CORRUPT',
  423: 'LOCKED',
};

/** A KkError for an unexpected status: the server's own code when it is one of ours, else by status. */
function statusError(status: number, body: Buffer, what: string): Error {
  let code: string | undefined;
  let message = `${what}: HTTP ${status}`;
  let hint: string | undefined;
  try {
    const e = (JSON.parse(body.toString('utf8')) as { error?: { code?: string; message?: string; hint?: string } }).error;
    if (e?.message) message = `kk server: ${e.message}`;
    code = e?.code;
    hint = e?.hint;
  } catch {
    // not a JSON error body (a proxy's page, say): the status decides
  }
  const opts = { details: { status, server_code: code }, ...(hint ? { hint } : {}) };
  // A full store is the user's to fix, not a transient failure to retry.
  if (code === 'DISK_FULL') return new KkError('DISK_FULL', message, opts);
  if (status >= 500) return new KkError('BACKEND', message, opts);
  if (code && code in ERROR_CODES) return new KkError(code as KkErrorCode, message, opts);
  if (code === 'PINNED') return new KkError('FORBIDDEN', message, opts);
  if (status === 413) return new KkError('CONFIG_INVALID', message, { ...opts, hint: 'the server refuses bodies this large: raise its max_body, or use a smaller chunk_size' });
  if (status === 400) return new TypeError(message);
  return new KkError(CODE_OF_STATUS[status] ?? 'BACKEND', message, opts);
}

// ---- small helpers ----

function parseBase(url: string): { origin: string; prefix: string; token: string | undefined } {
  let u: URL;
  try {
    u = new URL(url);
  } catch (err) {
    throw new KkError('CONFIG_INVALID', `malformed server URL "${url}"`, { cause: err });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new KkError('CONFIG_INVALID', `the http driver needs an http(s) URL, got ${u.protocol}`);
  const token = u.username ? decodeURIComponent(u.username) : undefined;
  return { origin: u.origin, prefix: u.pathname.replace(/\/+$/, ''), token };
}

function defaultAgent(): string {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // containers without a passwd entry
  }
  return `kk/${user}@${hostname()}`;
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}
