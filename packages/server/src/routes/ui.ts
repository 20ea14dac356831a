// The web UI (packages/web, DESIGN 15) served at /ui: the built files of packages/web/dist,
// hashed assets cached for a year (immutable), index.html never cached, a strict CSP (nothing
// inline, nothing from elsewhere), and the SPA's index.html for any other path under /ui/ (deep
// links). Also CORS for the origins in `cors_origins`, for the same UI hosted elsewhere.
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KkError } from '@kk/core';
import type { ServerConfig } from '../config.js';
import { sendBytes } from '../http.js';
import type { Call, ServerContext } from '../context.js';

/** Where the built UI is: KK_UI_DIR, else packages/web/dist next to this package. */
export function uiDir(): string {
  return process.env.KK_UI_DIR || fileURLToPath(new URL('../../../web/dist/', import.meta.url));
}

export const UI_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};

const SECURITY = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
};

export function registerUiRoutes(srv: ServerContext): void {
  const dir = uiDir();
  srv.router.add('GET', '/ui', { public: true, handler: (c) => serveIndex(c, dir) });
  srv.router.add('GET', '/ui/{key+}', { public: true, handler: (c) => serveFile(c, dir) });
}

async function serveIndex(c: Call, dir: string): Promise<void> {
  // Relative asset URLs need the trailing slash.
  if ((c.req.url ?? '').split('?')[0] === '/ui') {
    c.res.writeHead(308, { location: '/ui/', 'content-length': '0' });
    c.res.end();
    return;
  }
  let html: Buffer;
  try {
    html = await readFile(join(dir, 'index.html'));
  } catch {
    throw new KkError('NOT_FOUND', `the web UI is not built (no ${join(dir, 'index.html')})`, { hint: 'run `npm run build` (it builds packages/web), or set KK_UI_DIR to a built UI' });
  }
  await sendBytes(c.req, c.res, 200, html, { 'content-type': TYPES['.html']!, 'cache-control': 'no-cache', 'content-security-policy': UI_CSP, ...SECURITY }, true);
}

async function serveFile(c: Call, dir: string): Promise<void> {
  const key = c.params.key!;
  // The router's key rule already refused `.`, `..`, empty segments, backslashes and NUL.
  const type = TYPES[extname(key)];
  let bytes: Buffer | undefined;
  if (type) bytes = await readFile(join(dir, key)).catch(() => undefined);
  if (!bytes) {
    // An asset that does not exist is a 404; any other path is a view of the SPA (deep link).
    if (key.startsWith('assets/') || (type && type !== TYPES['.html'])) throw new KkError('NOT_FOUND', `/ui/${key} does not exist`);
    return serveIndex(c, dir);
  }
  const immutable = key.startsWith('assets/');
  const headers: Record<string, string> = { 'content-type': type!, 'cache-control': immutable ? 'public, max-age=31536000, immutable' : 'no-cache', ...SECURITY };
  if (type === TYPES['.html']) headers['content-security-policy'] = UI_CSP;
  await sendBytes(c.req, c.res, 200, bytes, headers, !/^image\/png|font\//.test(type!));
}

const ALLOW_HEADERS = 'authorization, content-type, idempotency-key, x-kk-agent';
const EXPOSE_HEADERS = 'x-kk-manifest-digest, x-kk-version, etag, location';

/**
 * CORS for the configured origins (`cors_origins`; none by default, so a browser on another
 * origin gets no answer it may read). Sets the headers on every response to an allowed origin;
 * answers a preflight (OPTIONS with Access-Control-Request-Method) itself and returns true.
 * Tokens travel in the Authorization header, never cookies: no credentials mode.
 */
export function applyCors(config: Pick<ServerConfig, 'corsOrigins'>, req: IncomingMessage, res: ServerResponse): boolean {
  const origins = config.corsOrigins;
  const origin = req.headers.origin;
  const preflight = req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined;
  if (!origins?.length || typeof origin !== 'string') return false;
  if (!(origins.includes('*') || origins.includes(origin))) {
    if (preflight) {
      res.writeHead(403, { 'content-type': 'text/plain; charset=utf-8', vary: 'origin' });
      res.end(`origin ${origin} is not in the server's cors_origins`);
      return true;
    }
    return false;
  }
  res.setHeader('access-control-allow-origin', origins.includes('*') ? '*' : origin);
  res.setHeader('vary', 'origin');
  if (!preflight) {
    res.setHeader('access-control-expose-headers', EXPOSE_HEADERS);
    return false;
  }
  res.writeHead(204, {
    'access-control-allow-methods': 'GET, HEAD, POST, PUT, PATCH, DELETE',
    'access-control-allow-headers': ALLOW_HEADERS,
    'access-control-max-age': '600',
  });
  res.end();
  return true;
}
