// The kk server (DESIGN 9): a thin HTTP layer over a core Store. It keeps no state that another
// instance on the same store would miss: tokens, webhooks, the outbox, upload sessions and the
// audit log all live under server/ in the store; memory holds only short-lived caches.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Digest, type Hasher, KkError, type Store, createHasher, decodeManifest, manifestKey, Store as StoreClass } from '@kk/core';
import { openDriver } from '@kk/drivers';
import { AuditLog } from './audit.js';
import { Caches, type CachedManifest } from './cache.js';
import { type ServerConfig, resolveConfig } from './config.js';
import { HttpError, errorResponse, sendJson } from './http.js';
import { Listing } from './listing.js';
import { type LogLevel, type LogSink, type Logger, createLogger } from './log.js';
import { type Metrics, createMetrics } from './metrics.js';
import { Router } from './router.js';
import { type Principal, type Permission, TokenService, formatScope, hasPermission, may, scopeCovers } from './tokens.js';
import { Webhooks } from './webhooks.js';
import { RetentionScheduler } from './retention.js';
import { registerObjectRoutes } from './routes/objects.js';
import { registerApiRoutes } from './routes/api.js';
import { registerFileRoutes } from './routes/files.js';
import { registerAdminRoutes } from './routes/admin.js';
import type { EventType } from './config.js';

/** One request as handlers see it. */
export interface Call {
  req: IncomingMessage;
  res: ServerResponse;
  params: Record<string, string>;
  query: URLSearchParams;
  /** The authenticated caller (routes marked public have none). */
  principal: Principal;
  /** The client's `X-Kk-Agent` header. */
  agent: string | undefined;
  address: string | undefined;
}

export type Handler = (call: Call) => Promise<void>;

export interface RouteEntry {
  handler: Handler;
  /** No token needed (`/healthz`, `/metrics`). */
  public?: boolean;
}

export interface KkServerOptions {
  /** Store URL (any registered driver scheme, or a path) or an open Store. */
  store: string | Store;
  /** Token with global admin rights, compared in constant time; never stored. */
  adminToken?: string;
  config?: Partial<ServerConfig>;
  /** Where JSON log lines go (default stdout); `false` for none. */
  log?: LogSink | false;
  logLevel?: LogLevel;
  /** Resolve a relative store path against this directory. */
  cwd?: string;
}

export interface AuditFields {
  project?: string;
  app?: string;
  version?: string;
  manifest?: string;
  channel?: string;
  previous?: string;
  details?: Record<string, unknown>;
}

export class KkServer {
  readonly router = new Router<RouteEntry>();
  readonly caches: Caches;
  readonly metrics: Metrics;
  readonly tokens: TokenService;
  readonly audit: AuditLog;
  readonly webhooks: Webhooks;
  readonly listing: Listing;
  readonly retention: RetentionScheduler;
  /** Set when this start minted the first admin token (no KK_ADMIN_TOKEN, empty store). */
  initialAdminToken: string | undefined;
  private http: Server | undefined;
  private tmp: string | undefined;
  private closed = false;
  private flushing: Promise<void> | undefined;
  private flushQueued: Promise<void> | undefined;

  private constructor(
    readonly store: Store,
    readonly hasher: Hasher,
    readonly config: ServerConfig,
    readonly log: Logger,
    adminToken: string | undefined,
    private readonly ownsStore: boolean,
  ) {
    this.caches = new Caches(config.manifestCacheBytes, config.cacheTtlMs);
    this.metrics = createMetrics(() => this.webhooks.depth);
    this.tokens = new TokenService(store, adminToken);
    this.audit = new AuditLog(store, (err, e) => log.error('audit write failed; retrying in the background', { action: e.action, id: e.id, err: String(err) }));
    this.webhooks = new Webhooks(store, config, log, this.metrics);
    this.listing = new Listing(this);
    this.retention = new RetentionScheduler(this);
    registerObjectRoutes(this);
    registerApiRoutes(this);
    registerFileRoutes(this);
    registerAdminRoutes(this);
  }

  static async create(opts: KkServerOptions): Promise<KkServer> {
    const config = resolveConfig(opts.config);
    const log = createLogger(opts.log, opts.logLevel);
    let store: Store;
    if (typeof opts.store === 'string') {
      const driver = await openDriver(opts.store, opts.cwd ? { cwd: opts.cwd } : {});
      store = await StoreClass.open(driver, { create: true });
    } else store = opts.store;
    const hasher = createHasher(config.hasherThreads ? { threads: config.hasherThreads } : {});
    let srv: KkServer;
    try {
      srv = new KkServer(store, hasher, config, log, opts.adminToken, typeof opts.store === 'string');
    } catch (err) {
      await hasher.close();
      throw err;
    }
    try {
      await srv.webhooks.syncConfig(config.webhooks);
      if (!opts.adminToken) await srv.bootstrapAdmin();
    } catch (err) {
      await srv.close();
      throw err;
    }
    srv.webhooks.start();
    srv.retention.start();
    return srv;
  }

  /** Without a preset admin token, the first start on an empty store mints one, shown once. */
  private async bootstrapAdmin(): Promise<void> {
    if (await this.tokens.any()) return;
    const marker = Buffer.from(JSON.stringify({ created: new Date().toISOString() }));
    if (!(await this.store.writer.putIfAbsent('server/bootstrap', marker))) return;
    const { token, record } = await this.tokens.mint({ name: 'initial admin', scope: { kind: 'global' }, permissions: ['admin'] }, 'bootstrap');
    this.initialAdminToken = token;
    await this.audit.record({ action: 'token.create', token: 'bootstrap', details: { id: record.id, scope: record.scope, permissions: record.permissions } });
    await this.durable();
  }

  /** Listen on `host:port` (port 0 picks a free one); resolves the base URL. */
  async listen(listen: string | { host?: string; port: number } = '127.0.0.1:8080'): Promise<string> {
    const { host, port } = typeof listen === 'string' ? parseListen(listen) : { host: listen.host ?? '127.0.0.1', port: listen.port };
    const http = createServer({ keepAliveTimeout: 65_000, requestTimeout: 0, headersTimeout: 60_000 }, (req, res) => void this.handle(req, res));
    this.http = http;
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(port, host, () => {
        http.off('error', reject);
        resolve();
      });
    });
    const addr = http.address() as AddressInfo;
    const shownHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    const url = `http://${shownHost}:${addr.port}`;
    this.log.info('listening', { url, store: this.store.driver.name });
    return url;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.retention.stop();
    await this.webhooks.close();
    await this.audit.close();
    if (this.http) {
      const http = this.http;
      // In-flight requests may finish; whoever still holds a connection after 10 s is cut off.
      const cut = setTimeout(() => http.closeAllConnections(), 10_000);
      await new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeIdleConnections();
      });
      clearTimeout(cut);
    }
    await this.hasher.close();
    if (this.tmp) await rm(this.tmp, { recursive: true, force: true }).catch(() => {});
    if (this.ownsStore) await this.store.driver.close();
    this.log.info('stopped');
  }

  /** A private temp directory for whole-file uploads. */
  async tmpDir(): Promise<string> {
    this.tmp ??= await mkdtemp(join(this.config.tmpDir ?? tmpdir(), 'kk-server-'));
    return this.tmp;
  }

  /**
   * Make every write this server completed so far durable (the store's flush), as a group
   * commit: callers that arrive while a flush runs share the next one, and nobody returns before
   * a flush that began after its own writes has finished.
   */
  durable(): Promise<void> {
    if (this.flushQueued) return this.flushQueued;
    if (this.flushing) {
      this.flushQueued = this.flushing
        .catch(() => {})
        .then(() => {
          this.flushQueued = undefined;
          return this.startFlush();
        });
      return this.flushQueued;
    }
    return this.startFlush();
  }

  private startFlush(): Promise<void> {
    const run = this.store.flush().finally(() => {
      if (this.flushing === run) this.flushing = undefined;
    });
    this.flushing = run;
    return run;
  }

  // ---- authorization ----

  /** FORBIDDEN unless the caller holds `perm` over `project/app` (neither: over everything). */
  require(call: Call, perm: Permission, project?: string, app?: string): void {
    if (!may(call.principal, perm, project, app)) throw forbidden(call.principal, perm, project, app);
  }

  /** FORBIDDEN unless the caller holds any of `perms` over `project/app`. */
  requireAny(call: Call, perms: Permission[], project?: string, app?: string): void {
    if (!perms.some((p) => may(call.principal, p, project, app))) throw forbidden(call.principal, perms.join(' or '), project, app);
  }

  /** The permission regardless of scope (chunks are shared by every project). */
  requireUnscoped(call: Call, perms: Permission[]): void {
    if (!perms.some((p) => hasPermission(call.principal, p))) throw forbidden(call.principal, perms.join(' or '));
  }

  covers(call: Call, project?: string, app?: string): boolean {
    return scopeCovers(call.principal.scope, project, app);
  }

  // ---- shared reads ----

  /** A manifest by digest, validated, from the cache or the store. NOT_FOUND if absent. */
  async manifest(digest: Digest): Promise<CachedManifest> {
    const hit = this.caches.manifests.get(digest);
    if (hit) return hit;
    const bytes = await this.store.driver.get(manifestKey(digest));
    if (!bytes) throw new KkError('NOT_FOUND', `manifest ${digest} does not exist`);
    const entry: CachedManifest = { manifest: decodeManifest(bytes, digest), bytes };
    this.caches.manifests.set(digest, entry);
    return entry;
  }

  // ---- audit + events ----

  /**
   * Record an action in the audit log and, for event types, emit the event to webhooks. Called
   * after the action happened, so it never fails it: writes the store refuses are retried in
   * the background (and logged).
   */
  async activity(call: Call | undefined, action: string, f: AuditFields, actor?: { token: string; agent?: string }): Promise<void> {
    const token = actor?.token ?? call?.principal.tokenId ?? 'server';
    const agent = actor?.agent ?? call?.agent;
    const address = call?.address;
    const entry = { action, token, agent, address, project: f.project, app: f.app, version: f.version, manifest: f.manifest, channel: f.channel, details: f.previous ? { ...f.details, previous: f.previous } : f.details };
    await this.audit.record(entry, true);
    if (EVENT_ACTIONS.has(action) && f.project && f.app) {
      const event: Parameters<Webhooks['emit']>[0] = { type: action as EventType, project: f.project, app: f.app, actor: stripUndefined({ token, agent, address }) as { token: string } };
      if (f.version) event.version = f.version;
      if (f.manifest) event.manifest = f.manifest;
      if (f.channel) event.channel = f.channel;
      if (f.previous) event.previous = f.previous;
      await this.webhooks.emit(event);
    }
  }

  // ---- the request pipeline ----

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    const sock = req.socket;
    const read0 = sock.bytesRead;
    const written0 = sock.bytesWritten;
    let label = 'unmatched';
    let principal: Principal | undefined;
    const agent = headerValue(req, 'x-kk-agent');
    const address = this.config.trustProxy ? (headerValue(req, 'x-forwarded-for')?.split(',')[0]?.trim() ?? sock.remoteAddress) : sock.remoteAddress;
    let logged = false;
    let clientAborted = false;
    const done = () => {
      if (logged) return;
      logged = true;
      const seconds = (performance.now() - t0) / 1000;
      // A client that went away mid-request is its abort (499, as nginx logs it), not a failure.
      const status = clientAborted || (!res.writableFinished && !req.complete) ? 499 : res.statusCode;
      // The socket may have read a request's head (and small bodies) before this handler ran.
      const declared = Number(req.headers['content-length']);
      const bytesIn = Number.isFinite(declared) && declared > 0 ? declared : Math.max(0, sock.bytesRead - read0);
      const bytesOut = Math.max(0, sock.bytesWritten - written0);
      this.metrics.requests.inc({ method: req.method ?? '', route: label, status: String(status) });
      this.metrics.duration.observe({ method: req.method ?? '', route: label }, seconds);
      this.metrics.bytesIn.inc({ route: label }, bytesIn);
      this.metrics.bytesOut.inc({ route: label }, bytesOut);
      if (label === '/healthz' || label === '/metrics') return;
      // Chunk traffic is most of the requests of a push or pull: debug, not info.
      const level = CHUNK_ROUTES.has(label) ? 'debug' : 'info';
      this.log[level]('request', {
        method: req.method,
        route: label,
        path: (req.url ?? '').split('?')[0],
        status,
        ms: Math.round(seconds * 1000),
        bytes_in: bytesIn,
        bytes_out: bytesOut,
        token: principal?.tokenId,
        agent,
        address,
        aborted: res.writableFinished ? undefined : true,
      });
    };
    res.once('finish', done);
    res.once('close', done);
    try {
      // The raw target, not a URL object: WHATWG URL parsing would resolve `..` away.
      const target = req.url ?? '/';
      const q = target.indexOf('?');
      const pathname = q < 0 ? target : target.slice(0, q);
      if (!pathname.startsWith('/')) throw new HttpError(400, 'BAD_REQUEST', 'the request target must be a path');
      checkRawPath(pathname);
      const method = req.method ?? 'GET';
      const match = this.router.match(method, pathname);
      if (!match) throw new HttpError(404, 'NOT_FOUND', `no route for ${method} ${pathname}`);
      if ('allowed' in match) {
        res.setHeader('allow', match.allowed.join(', '));
        throw new HttpError(405, 'METHOD_NOT_ALLOWED', `${method} is not allowed here (allowed: ${match.allowed.join(', ')})`);
      }
      label = match.route.pattern;
      if (!match.route.handler.public) principal = await this.tokens.authenticate(headerValue(req, 'authorization'));
      const call: Call = {
        req,
        res,
        params: match.params,
        query: new URLSearchParams(q < 0 ? '' : target.slice(q + 1)),
        principal: principal ?? ANONYMOUS,
        agent,
        address,
      };
      await match.route.handler.handler(call);
    } catch (err) {
      if (isClientAbort(req, err)) {
        clientAborted = true;
        res.destroy();
        return;
      }
      await this.fail(req, res, err);
    }
  }

  private async fail(req: IncomingMessage, res: ServerResponse, err: unknown): Promise<void> {
    const { status, body } = errorResponse(err);
    if (status >= 500) this.log.error('request failed', { method: req.method, path: (req.url ?? '').split('?')[0], status, err: errString(err) });
    if (res.headersSent) {
      res.destroy(err instanceof Error ? err : undefined);
      return;
    }
    const headers: Record<string, string> = {};
    if (status === 401) headers['www-authenticate'] = 'Bearer realm="kk"';
    // An unread body (413, or a refusal before reading) must not be drained: close instead.
    if (!req.complete) headers.connection = 'close';
    try {
      await sendJson(req, res, status, body, headers);
    } catch {
      res.destroy();
    }
  }
}

const EVENT_ACTIONS = new Set(['push', 'pull', 'promote', 'rollback', 'delete']);

/** Routes whose request lines are logged at debug: one per chunk of a push or pull. */
const CHUNK_ROUTES = new Set(['/api/v1/chunks/{digest}', '/api/v1/chunks/missing', '/api/v1/chunks/batch', '/api/v1/objects/exists']);

/** The client closed the connection before its request body arrived (or before the answer). */
function isClientAbort(req: IncomingMessage, err: unknown): boolean {
  if (err instanceof HttpError || err instanceof KkError) return false;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'EPIPE') return true;
  if (err instanceof Error && err.message === 'aborted') return true;
  return req.destroyed && !req.complete;
}

const ANONYMOUS: Principal = { tokenId: 'anonymous', name: '', scope: { kind: 'app', project: '', apps: [] }, permissions: new Set(), expires: undefined };

function forbidden(p: Principal, perm: string, project?: string, app?: string): KkError {
  const what = project ? (app ? ` on ${project}/${app}` : ` on project ${project}`) : '';
  const has = p.permissions.size ? [...p.permissions].join(',') : 'no permissions';
  return new KkError('FORBIDDEN', `token ${p.tokenId} (scope ${formatScope(p.scope)}, ${has}) does not allow ${perm}${what}`, {
    hint: 'use a token whose scope and permissions cover this',
    details: { permission: perm, project, app, scope: formatScope(p.scope), permissions: [...p.permissions] },
  });
}

/** Any `.`/`..`/empty segment or NUL/backslash anywhere in the path is a 400 before routing. */
function checkRawPath(pathname: string): void {
  const segs = pathname.split('/').slice(1);
  if (segs.length > 1 && segs[segs.length - 1] === '') segs.pop();
  for (const s of segs) {
    let d: string;
    try {
      d = decodeURIComponent(s);
    } catch {
      throw new HttpError(400, 'BAD_REQUEST', `malformed percent-encoding in the path`);
    }
    if ((s === '' && segs.length > 1) || d === '.' || d === '..' || /[\\\0]/.test(d)) {
      throw new KkError('INVALID_NAME', `invalid path segment ${JSON.stringify(d)}`, { details: { segment: d } });
    }
  }
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(s) ?? /^()()(\d+)$/.exec(s);
  if (!m) throw new KkError('CONFIG_INVALID', `listen address ${JSON.stringify(s)}: use HOST:PORT, e.g. 127.0.0.1:8080`);
  const port = Number(m[3]);
  if (port > 65535) throw new KkError('CONFIG_INVALID', `port ${port} is out of range`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

function errString(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}${err.cause ? ` (cause: ${String((err.cause as Error).message ?? err.cause)})` : ''}`;
  return String(err);
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

export interface StartServerOptions extends KkServerOptions {
  /** `HOST:PORT` or `{ host, port }`; port 0 picks a free port. Default 127.0.0.1:8080. */
  listen?: string | { host?: string; port: number };
}

export interface RunningServer {
  url: string;
  server: KkServer;
  /** The one-time admin token minted on the first start, if any. */
  initialAdminToken: string | undefined;
  close(): Promise<void>;
}

export async function createKkServer(opts: KkServerOptions): Promise<KkServer> {
  return KkServer.create(opts);
}

export async function startServer(opts: StartServerOptions): Promise<RunningServer> {
  const server = await KkServer.create(opts);
  try {
    const url = await server.listen(opts.listen);
    return { url, server, initialAdminToken: server.initialAdminToken, close: () => server.close() };
  } catch (err) {
    await server.close();
    throw err;
  }
}
