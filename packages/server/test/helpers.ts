// Shared by the server tests: a real server on 127.0.0.1:0 over a file store in a temp dir,
// a small HTTP client (undici, so nothing rewrites paths), and ways to publish versions.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { request as rawRequest } from 'node:http';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { request } from 'undici';
import { type Digest, MANIFEST_FORMAT, type Manifest, Store, chunkingFor, sha256Digest } from '@kk/core';
import { createHttpDriver } from '@kk/drivers/http';
import { Control } from '@kk/control';
import { type PostgresBackend, startPostgres } from '@kk/testkit';
import { afterAll } from 'vitest';
import { startServer, type RunningServer, type ServerConfig } from '../src/index.js';

export interface TestServer {
  url: string;
  admin: string;
  root: string;
  storeDir: string;
  /** The control database this server uses (SQLite in the store by default; PostgreSQL with KK_SERVER_TEST_DB=postgres). */
  db: string;
  server: RunningServer;
  /** Stop the server (the store stays until cleanup). */
  stop(): Promise<void>;
  /** Start a new server on the same store (a restart). */
  restart(config?: Partial<ServerConfig>): Promise<TestServer>;
  cleanup(): Promise<void>;
}

export const FAST_WEBHOOKS: Partial<ServerConfig> = {
  webhookBackoffMs: 50,
  webhookBackoffMaxMs: 200,
  webhookPollMs: 100,
  webhookTimeoutMs: 2_000,
};

/**
 * The control database of a new test server: SQLite in its store (the default), or with
 * KK_SERVER_TEST_DB=postgres a fresh database on a PostgreSQL this test file starts once.
 */
let pg: Promise<PostgresBackend> | undefined;
afterAll(async () => {
  const started = pg;
  pg = undefined;
  await (await started?.catch(() => undefined))?.stop();
});
export async function testDbUrl(storeDir: string): Promise<string> {
  if (process.env.KK_SERVER_TEST_DB !== 'postgres') return `sqlite://${path.join(storeDir, 'server', 'kk.db')}`;
  pg ??= startPostgres();
  return (await pg).createDatabase();
}

/** Open the control database of `t` (close it after use). */
export function openControl(t: Pick<TestServer, 'db'>): Promise<Control> {
  return Control.open(t.db);
}

export async function startTestServer(config: Partial<ServerConfig> = {}, root?: string, admin?: string, dbUrl?: string): Promise<TestServer> {
  const dir = root ?? (await mkdtemp(path.join(tmpdir(), 'kk-server-test-')));
  const token = admin ?? `admin-${randomBytes(16).toString('hex')}`;
  const storeDir = path.join(dir, 'store');
  const db = dbUrl ?? (await testDbUrl(storeDir));
  const server = await startServer({
    store: storeDir,
    db,
    listen: '127.0.0.1:0',
    adminToken: token,
    log: false,
    config: { hasherThreads: 1, ...FAST_WEBHOOKS, ...config },
  });
  let stopped = false;
  const t: TestServer = {
    url: server.url,
    admin: token,
    root: dir,
    storeDir,
    db,
    server,
    async stop() {
      if (!stopped) await server.close();
      stopped = true;
    },
    restart: (c = config) => startTestServer(c, dir, token, db),
    async cleanup() {
      await t.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return t;
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  json<T = any>(): T;
}

export interface CallOptions {
  token?: string | null;
  json?: unknown;
  body?: Buffer | string;
  headers?: Record<string, string>;
}

/** One HTTP request; `token: null` sends none. */
export async function call(base: string, method: string, p: string, opts: CallOptions = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let body: Buffer | string | undefined = opts.body;
  if (opts.json !== undefined) {
    body = JSON.stringify(opts.json);
    headers['content-type'] = 'application/json';
  }
  const res = await request(`${base}${p}`, { method: method as 'GET', headers, body: body ?? null });
  const buf = Buffer.from(await res.body.arrayBuffer());
  return {
    status: res.statusCode,
    headers: res.headers,
    body: buf,
    json: () => JSON.parse(buf.toString('utf8')),
  };
}

/** A request with the path sent exactly as given (no client normalizes `..`). */
export function rawCall(base: string, method: string, rawPath: string, token: string, body?: Buffer): Promise<{ status: number; body: string }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = rawRequest({ host: u.hostname, port: u.port, method, path: rawPath, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-length': String(body.length) } : {}) } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export async function mintToken(t: TestServer, scope: string, permissions: string[], extra: Record<string, unknown> = {}, as = t.admin): Promise<string> {
  const r = await call(t.url, 'POST', '/api/v1/tokens', { token: as, json: { scope, permissions, ...extra } });
  if (r.status !== 201) throw new Error(`mint failed: ${r.status} ${r.body.toString()}`);
  return r.json().token;
}

/** A Store over the http driver, as the CLI would open it. */
export async function httpStore(t: TestServer, token = t.admin): Promise<Store> {
  return Store.open(createHttpDriver({ url: t.url, token, agent: 'test-agent/1' }));
}

/**
 * Publish a version of small files through the seed's publish API; returns its manifest digest.
 * `created` is not settable there, so tests needing exact times use `publishAt`.
 */
export async function publishFiles(t: TestServer, project: string, app: string, version: string, files: Record<string, Buffer | string>, token = t.admin): Promise<string> {
  for (const [p, content] of Object.entries(files)) {
    const r = await call(t.url, 'PUT', `/file/${project}/${app}/${version}?path=${encodeURIComponent(p)}`, { token, body: Buffer.from(content) });
    if (r.status !== 201) throw new Error(`PUT ${p}: ${r.status} ${r.body.toString()}`);
  }
  const r = await call(t.url, 'POST', '/upload/finish', { token, json: { project, app, version } });
  if (r.status !== 201) throw new Error(`finish: ${r.status} ${r.body.toString()}`);
  return r.json().manifest;
}

/** Publish a one-file version with an exact creation time, through the http driver. */
export async function publishAt(store: Store, project: string, app: string, version: string, created: string, content: Buffer = randomBytes(2000)): Promise<{ manifest: Digest; chunk: Digest }> {
  const chunk = sha256Digest(content);
  await store.putChunkObject(chunk, Buffer.concat([Buffer.from([0]), content]));
  const m: Manifest = {
    format: MANIFEST_FORMAT,
    project,
    app,
    version,
    created,
    builder: 'test',
    git_commit: '',
    meta: {},
    chunking: store.config.chunking ?? chunkingFor(),
    dirs: [],
    files: [{ path: 'data.bin', size: content.length, mode: 0o644, mtime: Date.parse(created), sha256: chunk }],
  };
  const manifest = await store.putManifest(m);
  await store.putRef(project, app, version, manifest, 'test', created);
  return { manifest, chunk };
}

/** Every file under `dir` with its bytes' digest: a snapshot to prove a store unchanged. */
/**
 * Every file of a store and its digest. The control database's files (`server/kk.db*`) are left
 * out: SQLite rewrites its shared-memory index on reads; compare the event `seq` for its state.
 */
export async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (!e.isFile()) continue;
    const abs = path.join(e.parentPath, e.name);
    if (/^server[\\/]kk\.db/.test(path.relative(dir, abs))) continue;
    out[path.relative(dir, abs)] = sha256Digest(await readFile(abs));
  }
  return out;
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
