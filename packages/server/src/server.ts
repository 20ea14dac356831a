// The kk server (DESIGN 9): a thin HTTP layer over a core Store (the artifacts) and the control
// database (@kk/control: tokens, webhooks, the outbox and deliveries, upload sessions, the audit
// log, events, leases). It keeps no state another instance on the same store and database would
// miss; memory holds only short-lived caches.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Control, importStoreState } from '@kk/control';
import { type Digest, type Hasher, KkError, type Store, createHasher, decodeManifest, manifestBytes, manifestKey, Store as StoreClass } from '@kk/core';
import { openDriver } from '@kk/drivers';
import type { AuditLog } from './audit.js';
import { Caches, type CachedManifest } from './cache.js';
import { type ServerConfig, resolveConfig } from './config.js';
import { HttpError, errorResponse, sendJson } from './http.js';
import { Listing } from './listing.js';
import { type LogLevel, type LogSink, type Logger, createLogger } from './log.js';
import { type Metrics, createMetrics } from './metrics.js';
import { Router } from './router.js';
import type { AuditFields, Call, RouteEntry, ServerContext } from './context.js';
import { type Principal, type Permission, type TokenService, formatScope, hasPermission, may, scopeCovers } from './tokens.js';
import { Webhooks } from './webhooks.js';
import { RetentionScheduler } from './retention.js';
import { applyCors, registerUiRoutes } from './routes/ui.js';
import { registerObjectRoutes } from './routes/objects.js';
import { registerApiRoutes } from './routes/api.js';
import { registerFileRoutes } from './routes/files.js';
import { registerAdminRoutes } from './routes/admin.js';
import { type SyncService, registerSyncRoutes } from './routes/sync.js';
import { type DeployService, registerDeployRoutes } from './routes/deploy.js';
import { type SshNodes, registerSshNodes } from './ssh-nodes.js';
import { type EventStream, attachEventStream } from './ws.js';

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
  /**
   * The control database: `sqlite:///path/kk.db`, `postgres://user:pass@host:port/db`, or an
   * open Control (not closed by the server). Default: SQLite in the server's state directory
   * (see defaultDbUrl).
   */
  db?: string | Control;
}

/**
 * Where the control database lives without --db: for a file store, `<store>/server/kk.db`
 * (next to the state the server kept there before); for any other store, a SQLite file per
 * store under `$KK_STATE_DIR` (default `~/.local/state/kk`).
 */
export function defaultDbUrl(store: string | Store, cwd = process.cwd()): string {
  if (typeof store === 'string') {
    const hasScheme = /^[a-z][a-z0-9+.-]*:/i.test(store) && !/^[a-z]:[\\/]/i.test(store);
    if (!hasScheme) return `sqlite://${join(resolve(cwd, store), 'server', 'kk.db')}`;
    if (store.startsWith('file:')) return `sqlite://${join(fileURLToPath(new URL(store)), 'server', 'kk.db')}`;
  }
  const identity = typeof store === 'string' ? store.split('?')[0]! : `${store.driver.name}:${store.config.created}`;
  const dir = process.env.KK_STATE_DIR || join(process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'kk');
  return `sqlite://${join(dir, createHash('sha256').update(identity).digest('hex').slice(0, 16), 'kk.db')}`;
}

export class KkServer implements ServerContext {
  readonly router = new Router<RouteEntry>();
  /** The fleet's routes and background work (routes/sync.ts). */
  readonly sync: SyncService;
  /** The deploy center's routes and deadline sweep (routes/deploy.ts). */
  readonly deploy: DeployService;
  /** The server-side sync of ssh nodes (ssh-nodes.ts). */
  readonly sshNodes: SshNodes;
  readonly caches: Caches;
  readonly metrics: Metrics;
  readonly tokens: TokenService;
  readonly audit: AuditLog;
  readonly webhooks: Webhooks;
  readonly listing: Listing;
  readonly retention: RetentionScheduler;
  /** Activities the database refused, retried in the background (the action already happened). */
  private backlog: Parameters<Control['activity']>[0][] = [];
  private backlogTimer: NodeJS.Timeout | undefined;
  /** Set when this start minted the first admin token (no KK_ADMIN_TOKEN, empty store). */
  initialAdminToken: string | undefined;
  private http: Server | undefined;
  /** The WebSocket event stream (ws.ts), attached when listening. */
  eventStream: EventStream | undefined;
  private tmp: string | undefined;
  private closed = false;
  private flushing: Promise<void> | undefined;
  private flushQueued: Promise<void> | undefined;

  private constructor(
    readonly store: Store,
    readonly control: Control,
    readonly hasher: Hasher,
    readonly config: ServerConfig,
    readonly log: Logger,
    private readonly ownsStore: boolean,
    private readonly ownsControl: boolean,
  ) {
    this.caches = new Caches(config.manifestCacheBytes, config.cacheTtlMs);
    this.metrics = createMetrics(() => this.webhooks.depth + this.backlog.length);
    this.tokens = control.tokens;
    this.audit = control.audit;
    this.webhooks = new Webhooks(control, config, log, this.metrics);
    this.listing = new Listing(this);
    this.retention = new RetentionScheduler(this);
    registerUiRoutes(this);
    registerObjectRoutes(this);
    registerApiRoutes(this);
    registerFileRoutes(this);
    registerAdminRoutes(this);
    this.sync = registerSyncRoutes(this);
    this.deploy = registerDeployRoutes(this);
    this.sshNodes = registerSshNodes(this);
  }

  static async create(opts: KkServerOptions): Promise<KkServer> {
    const config = resolveConfig(opts.config);
    const log = createLogger(opts.log, opts.logLevel);
    // The database first: a bad or unreachable --db fails before anything is written to the store.
    let control: Control;
    const dbGiven = opts.db ?? config.db;
    if (dbGiven instanceof Control) control = dbGiven;
    else {
      const url = dbGiven ?? (typeof opts.store === 'string' ? defaultDbUrl(opts.store, opts.cwd) : undefined);
      const ctlOpts = { ...(opts.cwd ? { cwd: opts.cwd } : {}), ...(opts.adminToken ? { adminToken: opts.adminToken } : {}), ...(config.webhookSecret ? { webhookSecret: config.webhookSecret } : {}) };
      if (url) control = await Control.open(url, ctlOpts);
      else {
        // An open Store and no database named: its default place depends on the store's identity.
        control = await Control.open(defaultDbUrl(opts.store), ctlOpts);
      }
    }
    let store: Store;
    try {
      if (typeof opts.store === 'string') {
        const driver = await openDriver(opts.store, opts.cwd ? { cwd: opts.cwd } : {});
        store = await StoreClass.open(driver, { create: true });
      } else store = opts.store;
    } catch (err) {
      if (!(dbGiven instanceof Control)) await control.close();
      throw err;
    }
    const m = control.migration;
    if (m.applied.length) log.info('control database migrated', { db: control.cdb.display, dialect: control.dialect, from: m.from, to: m.to });
    const hasher = createHasher(config.hasherThreads ? { threads: config.hasherThreads } : {});
    let srv: KkServer;
    try {
      srv = new KkServer(store, control, hasher, config, log, typeof opts.store === 'string', !(dbGiven instanceof Control));
    } catch (err) {
      await hasher.close();
      if (!(dbGiven instanceof Control)) await control.close();
      throw err;
    }
    try {
      const imported = await importStoreState(control.cdb, store.driver);
      if (imported.imported && imported.tokens + imported.webhooks + imported.deliveries + imported.audit + imported.uploads > 0) {
        const { imported: _i, ...counts } = imported;
        log.info('imported the server state kept in the store into the control database (once; the store objects are left in place)', { db: control.cdb.display, ...counts });
      }
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
    if (!(await this.control.settings.putIfAbsent('bootstrap', { created: new Date().toISOString() }))) return;
    const { token, record } = await this.tokens.mint({ name: 'initial admin', scope: { kind: 'global' }, permissions: ['admin'] }, 'bootstrap');
    this.initialAdminToken = token;
    await this.control.activity({ action: 'token.create', token: 'bootstrap', details: { id: record.id, scope: record.scope, permissions: record.permissions } });
    await this.durable();
  }

  /** Listen on `host:port` (port 0 picks a free one); resolves the base URL. */
  async listen(listen: string | { host?: string; port: number } = '127.0.0.1:8080'): Promise<string> {
    const { host, port } = typeof listen === 'string' ? parseListen(listen) : { host: listen.host ?? '127.0.0.1', port: listen.port };
    const http = createServer({ keepAliveTimeout: 65_000, requestTimeout: 0, headersTimeout: 60_000 }, (req, res) => void this.handle(req, res));
    this.http = http;
    this.eventStream = attachEventStream(this, http);
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
    await this.sshNodes.close();
    await this.sync.close();
    await this.deploy.close();
    await this.eventStream?.close();
    await this.webhooks.close();
    clearInterval(this.backlogTimer);
    await this.retryBacklog();
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
    if (this.ownsControl) await this.control.close();
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
    // Clients and the API get the JSON whatever the store keeps (a store may compress manifests).
    const manifest = decodeManifest(bytes, digest);
    const entry: CachedManifest = { manifest, bytes: manifestBytes(manifest).bytes };
    this.caches.manifests.set(digest, entry);
    return entry;
  }

  // ---- audit + events ----

  /**
   * Record an action: its audit entry, its event (seq) and, for webhook event types, one delivery
   * per matching webhook, in one transaction; then wake the dispatcher. Called after the action
   * happened, so it never fails it: a write the database refuses is retried in the background
   * (and logged). Returns the event's seq (undefined when deferred).
   */
  async activity(call: Call | undefined, action: string, f: AuditFields, actor?: { token: string; agent?: string }): Promise<number | undefined> {
    const token = actor?.token ?? call?.principal.tokenId ?? 'server';
    const agent = actor?.agent ?? call?.agent;
    const address = call?.address;
    const a = stripUndefined({ action, token, agent, address, project: f.project, app: f.app, version: f.version, manifest: f.manifest, channel: f.channel, previous: f.previous, details: f.details });
    for (let i = 1; ; i++) {
      try {
        const r = await this.control.activity(a);
        if (r.deliveries.length) this.webhooks.kick();
        return r.seq;
      } catch (err) {
        if (i < 3) {
          await new Promise((res) => setTimeout(res, 20 * i));
          continue;
        }
        this.log.error('audit write failed; retrying in the background', { action, err: String(err) });
        this.backlog.push({ ...a, time: new Date().toISOString() } as typeof a);
        this.backlogTimer ??= setInterval(() => void this.retryBacklog(), 1000).unref();
        return undefined;
      }
    }
  }

  private async retryBacklog(): Promise<void> {
    for (const a of this.backlog.splice(0)) {
      try {
        const r = await this.control.activity(a);
        if (r.deliveries.length) this.webhooks.kick();
      } catch {
        this.backlog.push(a);
      }
    }
    if (!this.backlog.length) {
      clearInterval(this.backlogTimer);
      this.backlogTimer = undefined;
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
    // CORS for the configured origins; a preflight is answered here (routes/ui.ts).
    if (applyCors(this.config, req, res)) return;
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
