// A client for one repository of an OCI distribution registry (distribution-spec v1.1): blobs
// (HEAD, GET with Range, monolithic or chunked upload), manifests (GET,
// HEAD, PUT, DELETE) and the tag list with Link pagination. undici keep-alive pool; auth by
// RegistryAuth on the first 401; 5xx and network errors retried with jittered backoff. Registry
// error bodies (`{"errors":[{"code":"BLOB_UNKNOWN",...}]}`) become KkErrors here, once.
import { createHash } from 'node:crypto';
import { Pool, request } from 'undici';
import { KkError, type KkErrorCode } from '@kk/core';
import { RegistryAuth, type RegistryCredentials } from './registry-auth.js';

export interface RegistryClientOptions {
  /** `host[:port]` of the registry. Required. */
  host: string;
  /** Repository name, `a/b/c`. Required. */
  repository: string;
  /** Plain http instead of https (a registry on 127.0.0.1 or a trusted network). Default false. */
  insecure?: boolean;
  /** Credentials; default: `KK_REGISTRY_USER`/`KK_REGISTRY_PASSWORD`, else the Docker config. */
  credentials?: RegistryCredentials;
  /** Keep-alive connections. Default 16. */
  connections?: number;
  /** Retries after a 5xx or network error. Default 4. */
  retries?: number;
  /** Uploads larger than this go in PATCH chunks of this size. Default 32 MiB. */
  chunkSize?: number;
  /** Headers and body timeout in ms. Default 120000. */
  timeoutMs?: number;
}

export interface ManifestResponse {
  digest: string;
  mediaType: string;
  body: Buffer;
}

const MEDIA_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const MEDIA_OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const MANIFEST_ACCEPT = [MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX, 'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.docker.distribution.manifest.list.v2+json'].join(', ');
const REPOSITORY = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;

type Access = 'pull' | 'push' | 'delete';

interface Exchange {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export class RegistryClient {
  readonly host: string;
  readonly repository: string;
  readonly origin: string;
  /** `registry host/repository`, for messages. */
  readonly where: string;
  /** Requests sent (every HTTP exchange with the registry, token requests excluded). */
  requests = 0;
  /**
   * HTTP/1.1 bytes of those exchanges: request line, headers and body sent; status line, headers
   * and body received (TLS framing and token requests excluded). Bench figures, not billing.
   */
  bytesSent = 0;
  bytesReceived = 0;
  private readonly pool: Pool;
  private readonly auth: RegistryAuth;
  private readonly retries: number;
  private readonly chunkSize: number;

  constructor(opts: RegistryClientOptions) {
    if (!REPOSITORY.test(opts.repository) || opts.repository.length > 255) {
      throw new KkError('CONFIG_INVALID', `bad registry repository name "${opts.repository}"`, { hint: 'lower-case letters, digits and . _ - separators, path components split by /' });
    }
    this.host = opts.host;
    this.repository = opts.repository;
    this.origin = `${opts.insecure ? 'http' : 'https'}://${opts.host}`;
    this.where = `registry ${opts.host}/${opts.repository}`;
    const timeout = opts.timeoutMs ?? 120_000;
    this.pool = new Pool(this.origin, { connections: opts.connections ?? 16, keepAliveTimeout: 30_000, headersTimeout: timeout, bodyTimeout: timeout });
    const env = process.env;
    const creds = opts.credentials ?? (env.KK_REGISTRY_USER ? { username: env.KK_REGISTRY_USER, password: env.KK_REGISTRY_PASSWORD ?? '' } : undefined);
    this.auth = new RegistryAuth(opts.host, opts.insecure ?? false, creds);
    this.retries = opts.retries ?? 4;
    this.chunkSize = opts.chunkSize ?? 32 * 1024 * 1024;
  }

  private scope(access: Access): string {
    return `repository:${this.repository}:${access === 'pull' ? 'pull' : access === 'push' ? 'pull,push' : 'delete'}`;
  }

  /** One exchange, authorized, retried on 5xx/network errors; a 401 answers the challenge once. */
  private async send(method: string, pathOrUrl: string, opts: { access: Access; headers?: Record<string, string>; body?: Buffer; ok: number[] }): Promise<Exchange> {
    const scope = this.scope(opts.access);
    for (let attempt = 0, challenged = false; ; attempt++) {
      const headers: Record<string, string> = { 'user-agent': 'kk-docker-driver', ...opts.headers };
      const authorization = await this.auth.authorize(scope);
      if (authorization) headers.authorization = authorization;
      let res: Exchange;
      try {
        res = await this.exchange(method, pathOrUrl, headers, opts.body);
      } catch (err) {
        if (attempt < this.retries) {
          await backoff(attempt);
          continue;
        }
        throw new KkError('BACKEND', `registry ${this.host}: ${method} ${stripQuery(pathOrUrl)}: ${(err as Error).message}`, { cause: err, hint: 'check that the registry is running and reachable (?insecure=true for plain http)' });
      }
      if (res.status === 401 && !challenged) {
        challenged = true;
        this.auth.forget(scope);
        this.auth.challenged(header(res.headers, 'www-authenticate'));
        attempt--;
        continue;
      }
      if (res.status >= 500 && attempt < this.retries) {
        await backoff(attempt);
        continue;
      }
      if (!opts.ok.includes(res.status)) throw registryError(res, `registry ${this.host}/${this.repository}: ${method} ${stripQuery(pathOrUrl)}`);
      return res;
    }
  }

  private async exchange(method: string, pathOrUrl: string, headers: Record<string, string>, body: Buffer | undefined, redirects = 0): Promise<Exchange> {
    this.requests++;
    const absolute = /^https?:\/\//.test(pathOrUrl);
    const sameOrigin = !absolute || new URL(pathOrUrl).origin === this.origin;
    const res = sameOrigin
      ? await this.pool.request({ method: method as 'GET', path: absolute ? pathAndQuery(pathOrUrl) : pathOrUrl, headers, body: body ?? null })
      : await request(pathOrUrl, { method: method as 'GET', headers, body: body ?? null });
    const data = method === 'HEAD' ? (await res.body.dump(), Buffer.alloc(0)) : Buffer.from(await res.body.arrayBuffer());
    this.bytesSent += httpHeadBytes(`${method} ${absolute ? pathAndQuery(pathOrUrl) : pathOrUrl} HTTP/1.1`, { host: this.host, ...headers, ...(body ? { 'content-length': String(body.length) } : {}) }) + (body?.length ?? 0);
    this.bytesReceived += httpHeadBytes(`HTTP/1.1 ${res.statusCode} XX`, res.headers) + data.length;
    // Blob GETs may redirect to the storage backend (S3, a CDN); its URL carries its own signature.
    if ((res.statusCode === 307 || res.statusCode === 302 || res.statusCode === 303) && (method === 'GET' || method === 'HEAD') && redirects < 5) {
      const location = header(res.headers, 'location');
      if (location) {
        const next = new URL(location, this.origin + (absolute ? '' : pathOrUrl)).href;
        const { authorization: _a, ...rest } = headers;
        return this.exchange(method, next, new URL(next).origin === this.origin ? headers : rest, undefined, redirects + 1);
      }
    }
    return { status: res.statusCode, headers: res.headers as Exchange['headers'], body: data };
  }

  private get base(): string {
    return `/v2/${this.repository}`;
  }

  // ---- blobs ----

  /** Size of the blob, or `undefined` when the repository does not have it. */
  async blobSize(digest: string): Promise<number | undefined> {
    const res = await this.send('HEAD', `${this.base}/blobs/${digest}`, { access: 'pull', ok: [200, 404] });
    if (res.status === 404) return undefined;
    return Number(header(res.headers, 'content-length') ?? 0);
  }

  /**
   * The blob's bytes, or the inclusive byte range of them (clamped; a start past the end gives
   * an empty Buffer). Missing: `undefined`. Whole blobs are checked against their digest.
   */
  async getBlob(digest: string, range?: { start: number; end: number }): Promise<Buffer | undefined> {
    const headers: Record<string, string> = range ? { range: `bytes=${range.start}-${range.end}` } : {};
    const res = await this.send('GET', `${this.base}/blobs/${digest}`, { access: 'pull', headers, ok: [200, 206, 404, 416] });
    if (res.status === 404) return undefined;
    if (res.status === 416) return Buffer.alloc(0);
    if (range && res.status === 200) {
      // The registry ignored Range: cut the range out of the whole blob.
      return res.body.subarray(range.start, range.end + 1);
    }
    if (!range && sha256(res.body) !== digest) {
      throw new KkError('CHUNK_CORRUPT', `registry ${this.host}/${this.repository}: blob ${digest} came back with other bytes`, { details: { digest } });
    }
    return res.body;
  }

  /**
   * Uploads `data` as blob `digest` unless the repository has it already: one POST + PUT, or
   * PATCH chunks for big blobs. Idempotent.
   */
  async putBlob(digest: string, data: Buffer): Promise<void> {
    // Small blobs are cheaper to send again than to ask about first.
    if (data.length > 64 * 1024 && (await this.blobSize(digest)) !== undefined) return;
    const start = await this.send('POST', `${this.base}/blobs/uploads/`, { access: 'push', ok: [202], headers: { 'content-length': '0' } });
    let location = this.location(start);
    if (data.length > this.chunkSize) {
      for (let offset = 0; offset < data.length; offset += this.chunkSize) {
        const part = data.subarray(offset, Math.min(offset + this.chunkSize, data.length));
        const res = await this.send('PATCH', location, {
          access: 'push',
          ok: [202],
          body: part,
          headers: { 'content-type': 'application/octet-stream', 'content-range': `${offset}-${offset + part.length - 1}`, 'content-length': String(part.length) },
        });
        location = this.location(res);
      }
      await this.send('PUT', withQuery(location, 'digest', digest), { access: 'push', ok: [201], headers: { 'content-length': '0' } });
      return;
    }
    await this.send('PUT', withQuery(location, 'digest', digest), {
      access: 'push',
      ok: [201],
      body: data,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(data.length) },
    });
  }

  private location(res: Exchange): string {
    const loc = header(res.headers, 'location');
    if (!loc) throw new KkError('BACKEND', `registry ${this.host}: an upload answer has no Location header`);
    return /^https?:\/\//.test(loc) ? loc : new URL(loc, this.origin).href;
  }

  // ---- manifests ----

  /** The manifest for a tag or digest, bytes as stored. Missing: `undefined`. */
  async getManifest(reference: string): Promise<ManifestResponse | undefined> {
    const res = await this.send('GET', `${this.base}/manifests/${reference}`, { access: 'pull', headers: { accept: MANIFEST_ACCEPT }, ok: [200, 404] });
    if (res.status === 404) return undefined;
    const digest = sha256(res.body);
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw new KkError('CHUNK_CORRUPT', `registry ${this.host}/${this.repository}: manifest ${reference} came back with other bytes`);
    }
    return { digest, mediaType: String(header(res.headers, 'content-type') ?? ''), body: res.body };
  }

  /** Digest of the manifest a tag names, without its body. Missing: `undefined`. */
  async headManifest(reference: string): Promise<string | undefined> {
    const res = await this.send('HEAD', `${this.base}/manifests/${reference}`, { access: 'pull', headers: { accept: MANIFEST_ACCEPT }, ok: [200, 404] });
    if (res.status === 404) return undefined;
    return String(header(res.headers, 'docker-content-digest') ?? '') || undefined;
  }

  /** Stores `body` under a tag (or its digest); resolves the manifest's digest. */
  async putManifest(reference: string, body: Buffer, mediaType: string): Promise<string> {
    await this.send('PUT', `${this.base}/manifests/${reference}`, { access: 'push', body, ok: [201], headers: { 'content-type': mediaType, 'content-length': String(body.length) } });
    return sha256(body);
  }

  /**
   * Deletes the manifest by digest (every tag naming it goes too). Resolves false when the
   * registry does not allow deletes (distribution without `storage.delete.enabled`).
   */
  async deleteManifest(digest: string): Promise<boolean> {
    const res = await this.send('DELETE', `${this.base}/manifests/${digest}`, { access: 'delete', ok: [202, 404, 405] });
    if (res.status === 405) return false;
    return true;
  }

  // ---- tags ----

  /** Every tag of the repository, page by page (Link: <...>; rel="next"). Missing repository: none. */
  async *tags(pageSize = 1000): AsyncGenerator<string> {
    let next: string | undefined = `${this.base}/tags/list?n=${pageSize}`;
    for (let pages = 0; next && pages < 100_000; pages++) {
      const res: Exchange = await this.send('GET', next, { access: 'pull', ok: [200, 404] });
      if (res.status === 404) return;
      const body = JSON.parse(res.body.toString('utf8')) as { tags?: string[] | null };
      yield* body.tags ?? [];
      const link = header(res.headers, 'link');
      const m = link ? /<([^>]+)>\s*;\s*rel="?next"?/.exec(link) : null;
      next = m ? (/^https?:\/\//.test(m[1]!) ? m[1]! : new URL(m[1]!, this.origin).href) : undefined;
    }
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}

export function sha256(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function header(headers: Exchange['headers'], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function pathAndQuery(url: string): string {
  const u = new URL(url);
  return u.pathname + u.search;
}

function withQuery(url: string, name: string, value: string): string {
  const u = new URL(url);
  u.searchParams.set(name, value);
  return u.href;
}

function stripQuery(p: string): string {
  return p.replace(/\?.*$/, '');
}

function backoff(attempt: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.random() * 100 * 2 ** attempt));
}

const CODE_OF_REGISTRY_ERROR: Record<string, KkErrorCode> = {
  UNAUTHORIZED: 'AUTH',
  DENIED: 'FORBIDDEN',
  NAME_UNKNOWN: 'NOT_FOUND',
  MANIFEST_UNKNOWN: 'NOT_FOUND',
  BLOB_UNKNOWN: 'NOT_FOUND',
  MANIFEST_BLOB_UNKNOWN: 'NOT_FOUND',
  DIGEST_INVALID: 'CHUNK_CORRUPT',
  SIZE_INVALID: 'CHUNK_CORRUPT',
  TOOMANYREQUESTS: 'BACKEND',
};

function registryError(res: Exchange, what: string): KkError {
  let code: string | undefined;
  let message = '';
  try {
    const e = (JSON.parse(res.body.toString('utf8')) as { errors?: { code?: string; message?: string; detail?: unknown }[] }).errors?.[0];
    code = e?.code;
    message = e?.message ?? '';
  } catch {
    // not a registry error body
  }
  const text = `${what}: HTTP ${res.status}${code ? ` ${code}` : ''}${message ? ` (${message})` : ''}`;
  const details = { status: res.status, registry_code: code };
  if (res.status === 401) return new KkError('AUTH', text, { details, hint: 'check the registry credentials (docker login, or user:password in the store URL)' });
  if (res.status === 403) return new KkError('FORBIDDEN', text, { details, hint: 'the credentials may pull but not push or delete in this repository' });
  if (res.status === 429) return new KkError('BACKEND', text, { details, hint: 'the registry rate-limits this client: wait, or authenticate for a higher limit' });
  if (res.status === 413) return new KkError('BACKEND', text, { details, hint: 'the registry (or a proxy before it) refuses bodies this large' });
  return new KkError((code && CODE_OF_REGISTRY_ERROR[code]) || 'BACKEND', text, { details });
}

/** Bytes of an HTTP/1.1 start line and header block as they cross the wire. */
function httpHeadBytes(startLine: string, headers: Record<string, string | string[] | undefined>): number {
  let n = startLine.length + 4; // CRLF after the start line and after the block
  for (const [k, v] of Object.entries(headers)) {
    for (const one of Array.isArray(v) ? v : v === undefined ? [] : [v]) n += k.length + 2 + Buffer.byteLength(one) + 2;
  }
  return n;
}
