// S3 and S3-compatible object storage (AWS, MinIO, Aliyun OSS) with no kk server in between: one
// object per key, under an optional prefix of one bucket. Existence checks for many keys list
// key ranges instead of sending a HEAD per key when that takes fewer requests; concurrent
// deletes are coalesced into DeleteObjects batches; the SDK retries with jittered backoff. A PUT
// is durable when it resolves, so the driver has no flush().
import { createHash } from 'node:crypto';
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { KkError, type KkErrorCode, forEachLimit } from '@kk/core';
import type { ByteRange, DriverCapabilities, ObjectInfo, PruneDriver } from '@kk/core';
import { checkKey, checkPrefix } from './keys.js';

export interface S3DriverOptions {
  /** Bucket name. Required. */
  bucket: string;
  /** Key prefix inside the bucket that holds the store, without a leading `/`. Default: `''`, the bucket root. */
  prefix?: string;
  /** Endpoint of an S3-compatible service (`http://127.0.0.1:9000` for MinIO). Default: AWS S3 of `region`. */
  endpoint?: string;
  /** Region. Default: `AWS_REGION`, then `AWS_DEFAULT_REGION`, then `us-east-1`. */
  region?: string;
  /**
   * Address the bucket in the path (`endpoint/bucket/key`) rather than in the host name. Default:
   * true when `endpoint` is set (MinIO, s3rver), false for AWS. Aliyun OSS needs false.
   */
  pathStyle?: boolean;
  /**
   * The backend honours `If-None-Match: *` on PUT (AWS S3, MinIO), which makes `putIfAbsent`
   * atomic. Set false for backends that ignore it (s3rver, older S3-compatible servers):
   * `putIfAbsent` then HEADs before it PUTs and `capabilities.atomicCreate` is false.
   * Default: true.
   */
  conditionalWrites?: boolean;
  /**
   * The backend replaces an object atomically on PUT (AWS S3, MinIO, OSS). Set false for
   * backends that truncate the live object and write it in place (s3rver): PUTs of one key from
   * this process are then serialized, and a whole-object GET is checked against the object's
   * MD5 ETag and retried when it caught a write half-done. Default: true.
   */
  atomicPuts?: boolean;
  /**
   * The backend groups keys correctly with `Delimiter=/` at any depth below the prefix (AWS S3,
   * MinIO, OSS). Set false for backends that drop keys nested two or more levels deep (s3rver):
   * `listChildren` then lists every key below the prefix and derives the children, one request
   * per 1000 keys. Default: true.
   */
  delimiterListing?: boolean;
  /** Static credentials. Default: the standard AWS chain (environment, shared files, SSO, container and instance roles). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Attempts per request, the first included; retries back off exponentially with jitter. Default: 4. */
  maxAttempts?: number;
  /** Open connections to the endpoint. Default: 64. */
  maxSockets?: number;
  /**
   * When requests carry a checksum. The SDK's own default, `WHEN_SUPPORTED`, sends trailing
   * CRC checksums that many S3-compatible servers reject; chunk bytes are verified against
   * their SHA-256 on read anyway. Default: `WHEN_REQUIRED`.
   */
  checksums?: 'WHEN_SUPPORTED' | 'WHEN_REQUIRED';
}

/** ListObjectsV2 returns at most this many keys per request; DeleteObjects takes at most this many. */
const PAGE = 1000;
const HEAD_CONCURRENCY = 32;
const LIST_CONCURRENCY = 8;
const DELETE_CONCURRENCY = 4;
/** Re-reads of an object whose body was cut short (or, with atomicPuts false, torn by a rewrite). */
const BODY_RETRIES = 8;
/** Retries of a conditional PUT that S3 answered with 409 (a concurrent conditional write). */
const CONFLICT_RETRIES = 5;

export function createS3Driver(opts: S3DriverOptions) {
  if (!opts.bucket) throw new TypeError('s3 driver needs a bucket');
  const root = opts.prefix ? checkKey(opts.prefix.replace(/^\/+|\/+$/g, '')) + '/' : '';
  const bucket = opts.bucket;
  const where = `s3://${bucket}/${root}`;
  const conditionalWrites = opts.conditionalWrites ?? true;
  const atomicPuts = opts.atomicPuts ?? true;
  const delimiterListing = opts.delimiterListing ?? true;
  const maxSockets = opts.maxSockets ?? 64;
  const capabilities: DriverCapabilities = {
    rangeReads: true,
    atomicCreate: conditionalWrites,
    listing: true,
    deletion: true,
    batchExists: true,
  };
  const client = new S3Client({
    region: opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
    ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
    forcePathStyle: opts.pathStyle ?? !!opts.endpoint,
    ...(opts.credentials ? { credentials: opts.credentials } : {}),
    maxAttempts: opts.maxAttempts ?? 4,
    retryMode: 'standard',
    requestChecksumCalculation: opts.checksums ?? 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      connectionTimeout: 10_000,
      httpAgent: { keepAlive: true, maxSockets },
      httpsAgent: { keepAlive: true, maxSockets },
    },
  });
  let closed = false;

  const objectKey = (key: string) => root + checkKey(key);

  function backendError(op: string, key: string, err: unknown): KkError {
    const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
    const status = e.$metadata?.httpStatusCode;
    const reason = [e.name, status && `HTTP ${status}`, e.message && e.message !== e.name && e.message !== 'UnknownError' ? e.message : undefined]
      .filter(Boolean)
      .join(': ');
    let code: KkErrorCode = 'BACKEND';
    let hint = 'check that the endpoint is reachable and the bucket exists, then retry';
    if (e.name === 'NoSuchBucket') hint = `create the bucket "${bucket}" first`;
    else if (e.name === 'CredentialsProviderError' || e.name === 'InvalidAccessKeyId' || e.name === 'SignatureDoesNotMatch' || e.name === 'ExpiredToken') {
      code = 'AUTH';
      hint = 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for this bucket';
    } else if (e.name === 'AccessDenied' || status === 403) {
      code = 'FORBIDDEN';
      hint = `the credentials lack ${op === 'get' || op === 'stat' || op.startsWith('list') || op === 'hasMany' ? 'read' : 'write'} access to ${where}`;
    }
    return new KkError(code, `s3 store ${where}: ${op} "${key}" failed: ${reason || String(err)}`, { cause: err, hint, details: { key } });
  }

  // Without atomic PUTs, two writers of one key would interleave their bytes in the object.
  const writing = new Map<string, Promise<unknown>>();
  function serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
    if (atomicPuts) return fn();
    const run = (writing.get(key) ?? Promise.resolve()).then(fn, fn);
    const tail = run.then(
      () => {},
      () => {},
    );
    writing.set(key, tail);
    void tail.then(() => {
      if (writing.get(key) === tail) writing.delete(key);
    });
    return run;
  }

  /**
   * The object's bytes, or `Range` of them. The SDK retries a request that fails, not a body
   * cut short, so that is retried here. With atomicPuts false, a whole object must match its
   * MD5 ETag, or it was read while being rewritten and is read again.
   */
  async function getObject(Key: string, Range?: string): Promise<{ body: Buffer; ranged: boolean }> {
    for (let attempt = 0; ; attempt++) {
      const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key, ...(Range ? { Range } : {}) }));
      let body: Buffer | undefined;
      try {
        body = await bodyBytes(res.Body);
      } catch (err) {
        if (attempt >= BODY_RETRIES) throw err;
      }
      if (body && (atomicPuts || Range || res.ETag?.replace(/"/g, '') === createHash('md5').update(body).digest('hex'))) {
        return { body, ranged: !!res.ContentRange };
      }
      if (attempt >= BODY_RETRIES) throw new Error(`the object kept changing while it was read (${attempt + 1} attempts)`);
      await new Promise((r) => setTimeout(r, 5 * 2 ** attempt));
    }
  }

  async function putObject(key: string, data: Uint8Array, op: string): Promise<void> {
    try {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: objectKey(key), Body: data, ContentLength: data.length }));
    } catch (err) {
      if (err instanceof TypeError) throw err;
      throw backendError(op, key, err);
    }
  }

  async function head(key: string, op: string): Promise<ObjectInfo | undefined> {
    try {
      const res = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey(key) }));
      return { key, size: res.ContentLength ?? 0, mtime: res.LastModified?.getTime() ?? 0 };
    } catch (err) {
      if (err instanceof TypeError) throw err;
      if (isNotFound(err)) return undefined;
      throw backendError(op, key, err);
    }
  }

  /** One page of keys (without the root) under `prefix`; `delimiter` also yields common prefixes. */
  async function listPage(op: string, input: { prefix: string; startAfter?: string; token?: string; delimiter?: string }): Promise<ListObjectsV2CommandOutput> {
    try {
      return await client.send(
        new ListObjectsV2Command({
          Bucket: bucket,
          Prefix: root + input.prefix,
          MaxKeys: PAGE,
          ...(input.token ? { ContinuationToken: input.token } : input.startAfter ? { StartAfter: root + input.startAfter } : {}),
          ...(input.delimiter ? { Delimiter: input.delimiter } : {}),
        }),
      );
    } catch (err) {
      throw backendError(op, input.prefix, err);
    }
  }

  /**
   * Which of `group` (sorted, unique keys of one "directory") exist, by listing the key range
   * they span. Listing stops as soon as it would cost more requests than HEADs for the keys not
   * yet decided; those are returned for the caller to HEAD. Keys are only taken as absent from
   * a complete listing or from a page the backend returned in key order.
   */
  async function existsByListing(dir: string, group: string[], found: Set<string>): Promise<string[]> {
    const wanted = new Set(group);
    const prefix = commonPrefix(group[0]!, group[group.length - 1]!, dir.length);
    // A proper prefix of the first key sorts before it: the range starts at that key.
    const startAfter = group[0]!.slice(0, -1);
    let decided = 0;
    let token: string | undefined;
    let previousLast = '';
    for (let pages = 0; pages < group.length - decided; pages++) {
      const page = await listPage('hasMany', { prefix, startAfter, token });
      const keys = (page.Contents ?? []).map((o) => o.Key!.slice(root.length));
      for (const k of keys) if (wanted.has(k)) found.add(k);
      if (!page.IsTruncated) return [];
      const last = keys[keys.length - 1];
      if (!last || !page.NextContinuationToken || !isSorted(keys) || last <= previousLast) {
        return group.filter((k) => !found.has(k));
      }
      previousLast = last;
      while (decided < group.length && group[decided]! <= last) decided++;
      if (decided === group.length) return [];
      token = page.NextContinuationToken;
    }
    return group.slice(decided).filter((k) => !found.has(k));
  }

  // delete() calls that arrive together leave together, as one DeleteObjects request.
  let pendingDeletes: { key: string; settle: (err?: KkError) => void }[] = [];
  function flushDeletes(): void {
    const batch = pendingDeletes;
    pendingDeletes = [];
    void forEachLimit(chunk(batch, PAGE), DELETE_CONCURRENCY, async (part) => {
      const failures = await deleteKeys([...new Set(part.map((p) => p.key))]);
      for (const p of part) p.settle(failures.get(p.key));
    });
  }

  /** Deletes up to 1000 keys; never rejects, returns the failure of each key that failed. */
  async function deleteKeys(keys: string[]): Promise<Map<string, KkError>> {
    const failures = new Map<string, KkError>();
    try {
      if (keys.length === 1) {
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: root + keys[0]! }));
        return failures;
      }
      const res = await client.send(
        new DeleteObjectsCommand({ Bucket: bucket, Delete: { Quiet: true, Objects: keys.map((k) => ({ Key: root + k })) } }),
      );
      for (const e of res.Errors ?? []) {
        if (e.Code === 'NoSuchKey') continue;
        const key = (e.Key ?? '').slice(root.length);
        failures.set(key, backendError('delete', key, Object.assign(new Error(e.Message ?? e.Code ?? 'delete failed'), { name: e.Code })));
      }
    } catch (err) {
      if (!isNotFound(err)) for (const k of keys) failures.set(k, backendError('delete', k, err));
    }
    return failures;
  }

  async function* listAll(prefix: string): AsyncGenerator<ObjectInfo> {
    let token: string | undefined;
    do {
      const page = await listPage('list', { prefix, token });
      for (const o of page.Contents ?? []) {
        yield { key: o.Key!.slice(root.length), size: o.Size ?? 0, mtime: o.LastModified?.getTime() ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  return {
    name: 's3',
    capabilities,
    /** The SDK client, for instrumentation (middleware) only; the driver owns and destroys it. */
    client,

    async get(key: string, range?: ByteRange) {
      const Key = objectKey(key);
      if (range && !(Number.isSafeInteger(range.start) && Number.isSafeInteger(range.end) && range.start >= 0 && range.end >= range.start)) {
        throw new TypeError(`invalid byte range ${JSON.stringify(range)}`);
      }
      try {
        if (!range) return (await getObject(Key)).body;
        // Some servers (s3rver) read `bytes=0-0` as the whole object: ask for a byte more, then cut.
        const { body, ranged } = await getObject(Key, `bytes=${range.start}-${range.end === 0 ? 1 : range.end}`);
        // A server that ignores Range answers 200 with the whole object.
        return (ranged ? body : body.subarray(range.start)).subarray(0, range.end - range.start + 1);
      } catch (err) {
        if (isNotFound(err)) return undefined;
        if (range && (statusOf(err) === 416 || (err as Error).name === 'InvalidRange')) return Buffer.alloc(0);
        throw backendError('get', key, err);
      }
    },

    async stat(key: string) {
      return head(key, 'stat');
    },

    async hasMany(keys: readonly string[]) {
      keys.forEach(checkKey);
      const groups = new Map<string, string[]>();
      for (const key of new Set(keys)) {
        const dir = key.slice(0, key.lastIndexOf('/') + 1);
        const group = groups.get(dir);
        if (group) group.push(key);
        else groups.set(dir, [key]);
      }
      const found = new Set<string>();
      const toHead: string[] = [];
      await forEachLimit(groups, LIST_CONCURRENCY, async ([dir, group]) => {
        // One key: a HEAD is one request, and a cheaper one than a LIST.
        if (group.length === 1) toHead.push(group[0]!);
        else toHead.push(...(await existsByListing(dir, group.sort(), found)));
      });
      await forEachLimit(toHead, HEAD_CONCURRENCY, async (key) => {
        if (await head(key, 'hasMany')) found.add(key);
      });
      return keys.map((k) => found.has(k));
    },

    list(prefix: string): AsyncIterable<ObjectInfo> {
      return listAll(checkPrefix(prefix));
    },

    async listChildren(prefix: string) {
      if (prefix !== '' && !prefix.endsWith('/')) throw new TypeError(`listChildren prefix must end in "/", got "${prefix}"`);
      checkPrefix(prefix);
      const names = new Set<string>();
      if (!delimiterListing) {
        for await (const o of listAll(prefix)) names.add(o.key.slice(prefix.length).split('/')[0]!);
        names.delete('');
        return [...names].sort();
      }
      const cut = root.length + prefix.length;
      let token: string | undefined;
      do {
        const page = await listPage('listChildren', { prefix, token, delimiter: '/' });
        for (const p of page.CommonPrefixes ?? []) names.add(p.Prefix!.slice(cut, -1));
        for (const o of page.Contents ?? []) names.add(o.Key!.slice(cut));
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      names.delete('');
      return [...names].sort();
    },

    async put(key: string, data: Uint8Array) {
      await serialized(key, () => putObject(key, data, 'put'));
    },

    async putIfAbsent(key: string, data: Uint8Array) {
      const Key = objectKey(key);
      if (!conditionalWrites) {
        return serialized(key, async () => {
          if (await head(key, 'putIfAbsent')) return false;
          await putObject(key, data, 'putIfAbsent');
          return true;
        });
      }
      for (let attempt = 0; ; attempt++) {
        try {
          await client.send(new PutObjectCommand({ Bucket: bucket, Key, Body: data, ContentLength: data.length, IfNoneMatch: '*' }));
          return true;
        } catch (err) {
          const status = statusOf(err);
          if (status === 412) return false;
          // 409 ConditionalRequestConflict: another conditional write to the key is in flight.
          if (status === 409 && attempt < CONFLICT_RETRIES) {
            await new Promise((r) => setTimeout(r, Math.random() * 50 * 2 ** attempt));
            continue;
          }
          throw backendError('putIfAbsent', key, err);
        }
      }
    },

    async delete(key: string) {
      checkKey(key);
      const failure = await new Promise<KkError | undefined>((settle) => {
        if (pendingDeletes.push({ key, settle }) === 1) setImmediate(flushDeletes);
      });
      if (failure) throw failure;
    },

    async close() {
      if (closed) return;
      closed = true;
      client.destroy();
    },
  } satisfies PruneDriver & { client: S3Client };
}

/**
 * Driver options from `s3://bucket/prefix?endpoint=URL&region=R&path_style=true`, plus the
 * backend switches `conditional_writes`, `atomic_puts` and `delimiter_listing` (true or false).
 * Credentials never come from the URL: they come from the AWS chain.
 */
export function s3DriverOptionsFromUrl(url: URL): S3DriverOptions {
  const bad = (why: string) => new KkError('CONFIG_INVALID', `bad s3 store URL: ${why}`, { hint: 'use s3://bucket/prefix?endpoint=URL&region=R&path_style=true' });
  if (!url.hostname) throw bad('it names no bucket');
  if (url.username || url.password) throw bad('credentials do not belong in the URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY');
  if (url.port) throw bad('a bucket has no port; put the server in ?endpoint=');
  const opts: S3DriverOptions = { bucket: url.hostname };
  const prefix = decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, '');
  if (prefix) {
    try {
      opts.prefix = checkKey(prefix);
    } catch (err) {
      throw bad((err as Error).message);
    }
  }
  const flag = (name: string, value: string): boolean => {
    if (/^(true|1|yes)$/i.test(value)) return true;
    if (/^(false|0|no)$/i.test(value)) return false;
    throw bad(`${name} must be true or false, got "${value}"`);
  };
  for (const [name, value] of url.searchParams) {
    switch (name) {
      case 'endpoint':
        if (!/^https?:\/\/[^/]/i.test(value)) throw bad(`endpoint must be an http(s) URL, got "${value}"`);
        opts.endpoint = value;
        break;
      case 'region':
        opts.region = value;
        break;
      case 'path_style':
        opts.pathStyle = flag(name, value);
        break;
      case 'conditional_writes':
        opts.conditionalWrites = flag(name, value);
        break;
      case 'atomic_puts':
        opts.atomicPuts = flag(name, value);
        break;
      case 'delimiter_listing':
        opts.delimiterListing = flag(name, value);
        break;
      default:
        throw bad(`unknown parameter "${name}" (known: endpoint, region, path_style, conditional_writes, atomic_puts, delimiter_listing)`);
    }
  }
  return opts;
}

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

/** A missing object; a missing bucket is a configuration problem, not absence. */
function isNotFound(err: unknown): boolean {
  const name = (err as Error | undefined)?.name;
  return name === 'NoSuchKey' || name === 'NotFound' || (statusOf(err) === 404 && name !== 'NoSuchBucket');
}

async function bodyBytes(body: { transformToByteArray(): Promise<Uint8Array> } | undefined): Promise<Buffer> {
  if (!body) return Buffer.alloc(0);
  const bytes = await body.transformToByteArray();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The longest common prefix of `a` and `b`, never shorter than `min` characters. */
function commonPrefix(a: string, b: string, min: number): string {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return a.slice(0, Math.max(n, min));
}

function isSorted(keys: string[]): boolean {
  for (let i = 1; i < keys.length; i++) if (keys[i - 1]! >= keys[i]!) return false;
  return true;
}

function chunk<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
