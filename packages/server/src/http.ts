// Request and response plumbing on Node's http: bounded body reading (413), JSON with gzip,
// the one mapping from KkError codes to HTTP statuses, and pagination.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { gzip } from 'node:zlib';
import { promisify } from 'node:util';
import { KkError, isKkError, type KkErrorCode } from '@kk/core';

const gzipAsync = promisify(gzip);

/** An error with an HTTP status; `code` is a KkError code when one fits. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

export const badRequest = (message: string, details?: Record<string, unknown>) => new HttpError(400, 'BAD_REQUEST', message, details);

const STATUS_OF: Record<KkErrorCode, number> = {
  CONFIG_MISSING: 400,
  CONFIG_INVALID: 400,
  INVALID_NAME: 400,
  UNSAFE_PATH: 400,
  SOURCE_INVALID: 422,
  VERSION_EXISTS: 409,
  NOT_FOUND: 404,
  CHUNK_CORRUPT: 422,
  MANIFEST_INVALID: 422,
  STORE_INVALID: 500,
  TARGET_NOT_MANAGED: 409,
  TARGET_CONFLICT: 409,
  MAX_DELETE: 409,
  NOTHING_TO_ROLLBACK: 409,
  LOCKED: 423,
  AUTH: 401,
  FORBIDDEN: 403,
  BACKEND: 502,
  DISK_FULL: 507,
  PAUSED: 409,
};

export interface ErrorBody {
  error: { code: string; message: string; hint?: string; details?: Record<string, unknown> };
}

/** Status and body for anything a handler threw. Unknown errors are 500 and say nothing inside. */
export function errorResponse(err: unknown): { status: number; body: ErrorBody } {
  if (err instanceof HttpError) {
    const body: ErrorBody = { error: { code: err.code, message: err.message } };
    if (err.details) body.error.details = err.details;
    return { status: err.status, body };
  }
  if (isKkError(err)) {
    const body: ErrorBody = { error: { code: err.code, message: err.message } };
    if (err.hint) body.error.hint = err.hint;
    if (err.details) body.error.details = err.details;
    return { status: STATUS_OF[err.code] ?? 500, body };
  }
  // The server's own temp files (whole-file uploads) on a full disk.
  const errno = (err as NodeJS.ErrnoException | undefined)?.code;
  if (errno === 'ENOSPC' || errno === 'EDQUOT') {
    return { status: 507, body: { error: { code: 'DISK_FULL', message: 'the server ran out of disk space while receiving the upload; nothing was stored', hint: 'free space on the server (kk gc removes unreferenced chunks) and retry' } } };
  }
  // The store's drivers throw TypeErrors for keys they refuse: the request named a bad key.
  if (err instanceof TypeError) return { status: 400, body: { error: { code: 'BAD_REQUEST', message: err.message } } };
  return { status: 500, body: { error: { code: 'INTERNAL', message: 'internal server error' } } };
}

/** Read the whole body, refusing (413) anything over `limit` bytes before or while it arrives. */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) throw tooLarge(limit);
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of req as AsyncIterable<Buffer>) {
    size += part.length;
    if (size > limit) throw tooLarge(limit);
    parts.push(part);
  }
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts, size);
}

export function tooLarge(limit: number): HttpError {
  return new HttpError(413, 'TOO_LARGE', `request body is larger than the limit of ${limit} bytes`, { limit });
}

export async function readJson<T = Record<string, unknown>>(req: IncomingMessage, limit: number): Promise<T> {
  const body = await readBody(req, limit);
  if (body.length === 0) return {} as T;
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch {
    throw badRequest('the request body is not valid JSON');
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw badRequest('the request body must be a JSON object');
  return v as T;
}

const GZIP_MIN = 256;

/** Send JSON, gzipped when the client accepts it and it is worth it. */
export async function sendJson(req: IncomingMessage, res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): Promise<void> {
  const raw = Buffer.from(JSON.stringify(value));
  await sendBytes(req, res, status, raw, { 'content-type': 'application/json; charset=utf-8', ...headers }, true);
}

export async function sendBytes(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  raw: Buffer,
  headers: Record<string, string>,
  compressible: boolean,
): Promise<void> {
  let body = raw;
  const h: Record<string, string> = { ...headers };
  if (compressible) {
    h.vary = 'accept-encoding';
    if (raw.length >= GZIP_MIN && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))) {
      body = await gzipAsync(raw, { level: 4 });
      h['content-encoding'] = 'gzip';
    }
  }
  h['content-length'] = String(body.length);
  res.writeHead(status, h);
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** Write `data`, waiting for the socket to drain: a slow reader never makes the server buffer. */
export function writeChunk(res: ServerResponse, data: Uint8Array): Promise<void> {
  if (res.destroyed) return Promise.reject(new Error('client went away'));
  if (res.write(data)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      res.off('drain', ok);
      res.off('close', closed);
      if (err) reject(err);
      else resolve();
    };
    const ok = () => done();
    const closed = () => done(new Error('client went away'));
    res.once('drain', ok);
    res.once('close', closed);
  });
}

export interface Page {
  limit: number;
  offset: number;
  order: 'asc' | 'desc';
}

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 500;

/** `limit` (default 50, at most 500), `offset`, `order=asc|desc` (by creation time; default desc). */
export function pageOf(query: URLSearchParams, defaultOrder: 'asc' | 'desc' = 'desc'): Page {
  const num = (name: string, dflt: number): number => {
    const v = query.get(name);
    if (v === null || v === '') return dflt;
    if (!/^\d+$/.test(v)) throw badRequest(`${name} must be a non-negative integer`);
    return Number(v);
  };
  const limit = Math.min(num('limit', DEFAULT_PAGE_SIZE), MAX_PAGE_SIZE);
  if (limit < 1) throw badRequest('limit must be at least 1');
  let order = query.get('order') ?? defaultOrder;
  const sort = query.get('sort');
  if (sort !== null) {
    if (sort === 'created' || sort === '+created') order = query.get('order') ?? 'asc';
    else if (sort === '-created') order = 'desc';
    else throw badRequest('sort must be created or -created');
  }
  if (order !== 'asc' && order !== 'desc') throw badRequest('order must be asc or desc');
  return { limit, offset: num('offset', 0), order };
}

export interface Paged<T> {
  items: T[];
  total: number;
  limit: number;
  offset: number;
  order: 'asc' | 'desc';
  next_offset: number | null;
}

/** Sort by `created` (ties by `name`) in the page's order and cut the page. */
export function paginate<T>(all: T[], page: Page, created: (t: T) => string, name: (t: T) => string): Paged<T> {
  const dir = page.order === 'asc' ? 1 : -1;
  const sorted = [...all].sort((a, b) => {
    const ca = created(a);
    const cb = created(b);
    if (ca !== cb) return ca < cb ? -dir : dir;
    const na = name(a);
    const nb = name(b);
    return na === nb ? 0 : na < nb ? -dir : dir;
  });
  const items = sorted.slice(page.offset, page.offset + page.limit);
  const next = page.offset + items.length;
  return { items, total: all.length, limit: page.limit, offset: page.offset, order: page.order, next_offset: next < all.length ? next : null };
}

export function notFound(what: string): KkError {
  return new KkError('NOT_FOUND', `${what} does not exist`);
}
