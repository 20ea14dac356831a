// Issue 10 on the server: what a store that fails at the wrong moment must not break (webhook
// deliveries, retried finishes, retention reports), what counts as a pull, and the smaller API
// defects (routes at the seed's paths, manifest digests, audit totals, 403s, push leases, raw
// chunk size, client aborts, log levels). Real server on 127.0.0.1:0 over a real file store and
// a real control database; failures are injected by wrapping the file driver, and the control
// database's write path (`Control.activity`) for what used to be the store's server/ objects.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, request as rawRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Driver, type PruneDriver, Store, createHasher, push, sha256Digest } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { createHttpDriver } from '@kk/drivers/http';
import { startServer, type RunningServer } from '../src/index.js';
import { Control } from '@kk/control';
import { FAST_WEBHOOKS, call, httpStore, mintToken, publishFiles, startTestServer, testDbUrl, waitFor, type TestServer } from './helpers.js';

/**
 * Fails writes whose key matches `failPut` (while set), activities (audit + event + deliveries)
 * whose action matches `failActivity`, and once armed, the first flush after the next ref write.
 */
class Faults {
  failPut: RegExp | undefined;
  failActivity: RegExp | undefined;

  wrapControl(control: Control): Control {
    const inner = control.activity.bind(control);
    control.activity = async (a) => {
      if (this.failActivity?.test(a.action)) throw Object.assign(new Error(`injected failure: activity ${a.action}`), { code: 'SQLITE_IOERR' });
      return inner(a);
    };
    return control;
  }
  private failFlushAfterRef = false;
  private refWritten = false;

  armFlushAfterRef(): void {
    this.failFlushAfterRef = true;
    this.refWritten = false;
  }

  wrap(inner: PruneDriver): PruneDriver {
    const boom = (what: string) => Object.assign(new Error(`injected failure: ${what}`), { code: 'EIO' });
    return {
      ...inner,
      name: inner.name,
      capabilities: inner.capabilities,
      list: (p: string) => inner.list(p),
      put: async (key: string, data: Uint8Array) => {
        if (this.failPut?.test(key)) throw boom(`put ${key}`);
        return inner.put(key, data);
      },
      putIfAbsent: async (key: string, data: Uint8Array) => {
        if (this.failPut?.test(key)) throw boom(`putIfAbsent ${key}`);
        const created = await inner.putIfAbsent(key, data);
        if (key.startsWith('refs/')) this.refWritten = true;
        return created;
      },
      flush: async () => {
        if (this.failFlushAfterRef && this.refWritten) {
          this.failFlushAfterRef = false;
          throw boom('flush');
        }
        await inner.flush?.();
      },
    } as PruneDriver;
  }
}

interface FaultyServer {
  url: string;
  admin: string;
  faults: Faults;
  logs: Record<string, unknown>[];
  server: RunningServer;
  close(): Promise<void>;
}

async function startFaultyServer(logLevel: 'debug' | 'info' = 'info'): Promise<FaultyServer> {
  const root = await mkdtemp(path.join(tmpdir(), 'kk-hardening-'));
  const faults = new Faults();
  const driver: Driver = faults.wrap(createFileDriver({ root: path.join(root, 'store'), fsync: false }));
  const store = await Store.open(driver, { create: true });
  const admin = `admin-${randomBytes(8).toString('hex')}`;
  const logs: Record<string, unknown>[] = [];
  const control = faults.wrapControl(await Control.open(await testDbUrl(path.join(root, 'store')), { adminToken: admin }));
  const server = await startServer({
    store,
    db: control,
    listen: '127.0.0.1:0',
    adminToken: admin,
    log: (e) => logs.push(e),
    logLevel,
    config: { hasherThreads: 1, ...FAST_WEBHOOKS, webhookMaxAttempts: 1000 },
  });
  return {
    url: server.url,
    admin,
    faults,
    logs,
    server,
    async close() {
      await server.close();
      await control.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** A webhook receiver on 127.0.0.1 that records every event body. */
async function receiver(): Promise<{ url: string; events: Record<string, any>[]; close(): Promise<void> }> {
  const events: Record<string, any>[] = [];
  const server: Server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      events.push(JSON.parse(Buffer.concat(parts).toString('utf8')));
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    events,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const queueDepth = async (url: string) => {
  const text = (await call(url, 'GET', '/metrics')).body.toString();
  return Number(/^kk_webhook_queue_depth (\d+)/m.exec(text)?.[1]);
};

const auditOf = async (url: string, token: string, q: string) => {
  const r = await call(url, 'GET', `/api/v1/audit${q}`, { token });
  expect(r.status).toBe(200);
  return r.json();
};

describe('a store that fails after the event is recorded (issue 10 items 1, 2)', () => {
  let s: FaultyServer;
  let rx: Awaited<ReturnType<typeof receiver>>;
  let hookId: string;
  beforeAll(async () => {
    s = await startFaultyServer();
    rx = await receiver();
    const r = await call(s.url, 'POST', '/webhooks', { token: s.admin, json: { name: 'all', url: rx.url, events: ['push', 'delete'] } });
    expect(r.status).toBe(201);
    hookId = r.json().id;
  });
  afterAll(async () => {
    await s.close();
    await rx.close();
  });
  afterEach(() => {
    s.faults.failPut = undefined;
    s.faults.failActivity = undefined;
  });

  it('a push whose event write fails still succeeds; the event is kept, counted, and delivered once the database recovers', async () => {
    s.faults.failActivity = /^push$/;
    const manifest = await publishFiles(s as unknown as TestServer, 'wh', 'app', 'v1', { 'a.txt': 'a' });
    expect(await queueDepth(s.url)).toBeGreaterThanOrEqual(1);
    // The event waits in the server's memory until the database takes it: no delivery row yet.
    const pending = (await call(s.url, 'GET', `/webhooks/${hookId}/deliveries`, { token: s.admin })).json().items;
    expect(pending).toEqual([]);
    await new Promise((r) => setTimeout(r, 300));
    expect(rx.events).toHaveLength(0);
    s.faults.failActivity = undefined;
    await waitFor('the push event', async () => rx.events.length >= 1);
    expect(rx.events).toEqual([expect.objectContaining({ type: 'push', project: 'wh', app: 'app', version: 'v1', manifest })]);
    await waitFor('the delivery to be logged as delivered', async () => {
      const items = (await call(s.url, 'GET', `/webhooks/${hookId}/deliveries`, { token: s.admin })).json().items;
      return items.length === 1 && items[0].state === 'delivered';
    });
    await waitFor('an empty queue', async () => (await queueDepth(s.url)) === 0);
    expect(rx.events).toHaveLength(1);
  });

  it('a store that refuses server/ writes does not matter: the server keeps no state there any more', async () => {
    const before = rx.events.length;
    s.faults.failPut = /^server\//;
    await publishFiles(s as unknown as TestServer, 'wh', 'app', 'v2', { 'a.txt': 'b' });
    await waitFor('the v2 push event', async () => rx.events.some((e) => e.version === 'v2'));
    expect(rx.events.slice(before).filter((e) => e.version === 'v2')).toHaveLength(1);
    expect((await auditOf(s.url, s.admin, '?action=push&project=wh&version=v2')).items).toHaveLength(1);
  });

  it('retrying POST /upload/finish after a failure past the ref answers 200 with the same version, never 409', async () => {
    const put = await call(s.url, 'PUT', '/file/fin/app/v1?path=a.txt', { token: s.admin, body: 'finish me' });
    expect(put.status).toBe(201);
    const uploadId = put.json().upload_id;
    s.faults.armFlushAfterRef();
    const first = await call(s.url, 'POST', '/upload/finish', { token: s.admin, json: { upload_id: uploadId } });
    expect(first.status).toBe(502);
    const ref = (await call(s.url, 'GET', '/api/v1/projects/fin/apps/app/versions/v1', { token: s.admin })).json();
    const retry = await call(s.url, 'POST', '/upload/finish', { token: s.admin, json: { upload_id: uploadId } });
    expect(retry.status).toBe(200);
    expect(retry.json()).toMatchObject({ project: 'fin', app: 'app', version: 'v1', manifest: ref.manifest, status: 'unchanged', files: 1 });
    // And once more, after the session was closed: the id still answers with the result.
    const again = await call(s.url, 'POST', '/upload/finish', { token: s.admin, json: { upload_id: uploadId } });
    expect(again.status).toBe(200);
    expect(again.json()).toMatchObject({ manifest: ref.manifest, status: 'unchanged' });
  });

  it('two finishes of one upload at once: one creates, the other answers 200, none 409', async () => {
    const put = await call(s.url, 'PUT', '/file/fin/app/v2?path=a.txt', { token: s.admin, body: 'twice' });
    const uploadId = put.json().upload_id;
    const both = await Promise.all([0, 1].map(() => call(s.url, 'POST', '/upload/finish', { token: s.admin, json: { upload_id: uploadId } })));
    expect(both.map((r) => r.status).sort()).toEqual([200, 201]);
    expect(new Set(both.map((r) => r.json().manifest)).size).toBe(1);
  });

  it('a retention run whose audit and event writes fail: the report, the store and the delete webhook agree on what was deleted', async () => {
    await publishFiles(s as unknown as TestServer, 'ret', 'app', 'v1', { 'a.txt': '1' });
    await new Promise((r) => setTimeout(r, 5));
    await publishFiles(s as unknown as TestServer, 'ret', 'app', 'v2', { 'a.txt': '2' });
    s.faults.failActivity = /^(delete|retention)$/;
    const run = await call(s.url, 'POST', '/api/v1/retention/run', { token: s.admin, json: { retain_versions: 1 } });
    s.faults.failActivity = undefined;
    expect(run.status).toBe(200);
    const deleted = run.json().deleted.filter((d: { project: string }) => d.project === 'ret');
    expect(deleted).toEqual([{ project: 'ret', app: 'app', version: 'v1' }]);
    expect((await call(s.url, 'GET', '/api/v1/projects/ret/apps/app/versions/v1', { token: s.admin })).status).toBe(404);
    await waitFor('the delete event', async () => rx.events.some((e) => e.type === 'delete' && e.project === 'ret'));
    expect(rx.events.filter((e) => e.type === 'delete' && e.project === 'ret').map((e) => e.version)).toEqual(['v1']);
    // The audit entry the store refused lands once it accepts writes again.
    await waitFor('the delete audit entry', async () => (await auditOf(s.url, s.admin, '?action=delete&project=ret')).items.length === 1);
    expect(s.logs.some((l) => l.msg === 'retention kept a version')).toBe(false);
  });
});

describe('what counts as a pull (issue 10 item 4)', () => {
  let t: TestServer;
  let hasher: ReturnType<typeof createHasher>;
  beforeAll(async () => {
    t = await startTestServer();
    hasher = createHasher({ threads: 1 });
  });
  afterAll(async () => {
    await hasher.close();
    await t.cleanup();
  });

  it('pushes, GET /manifest and manifest reads record no pull; POST /api/v1/pulls records one, with the agent id', async () => {
    const src = path.join(t.root, 'src');
    await mkdir(src, { recursive: true });
    let manifest = '';
    for (const version of ['v1', 'v2']) {
      await writeFile(path.join(src, 'f.txt'), `content ${version}`);
      const store = await httpStore(t);
      manifest = (await push({ store, hasher, project: 'pl', app: 'svc', version, dir: src, statCache: false })).manifest;
      await store.driver.close();
    }
    expect((await call(t.url, 'GET', '/manifest/pl/svc/v2', { token: t.admin })).status).toBe(200);
    expect((await call(t.url, 'GET', `/api/v1/manifests/${manifest}`, { token: t.admin })).status).toBe(200);
    expect((await auditOf(t.url, t.admin, '?action=pull&project=pl')).items).toEqual([]);

    const puller = await mintToken(t, 'app:pl/svc', ['pull']);
    const store = await Store.open(createHttpDriver({ url: t.url, token: puller }));
    await store.recordPull({ project: 'pl', app: 'svc', version: 'v2', manifest, agent: 'web-3/5f0c2a', upToDate: false });
    await store.driver.close();
    const { items, total } = await auditOf(t.url, t.admin, '?action=pull&project=pl');
    expect(total).toBe(1);
    expect(items).toEqual([expect.objectContaining({ action: 'pull', project: 'pl', app: 'svc', version: 'v2', manifest, agent: 'web-3/5f0c2a' })]);
  });

  it('POST /api/v1/pulls refuses a manifest that is not the version\'s, and tokens without pull', async () => {
    const bad = await call(t.url, 'POST', '/api/v1/pulls', { token: t.admin, json: { project: 'pl', app: 'svc', version: 'v1', manifest: sha256Digest(Buffer.from('x')) } });
    expect(bad.status).toBe(422);
    const other = await mintToken(t, 'app:pl/other', ['pull']);
    const m = (await call(t.url, 'GET', '/api/v1/projects/pl/apps/svc/versions/v1', { token: t.admin })).json().manifest;
    expect((await call(t.url, 'POST', '/api/v1/pulls', { token: other, json: { project: 'pl', app: 'svc', version: 'v1', manifest: m } })).status).toBe(403);
    expect((await auditOf(t.url, t.admin, '?action=pull&project=pl&version=v1')).total).toBe(0);
  });
});

describe('API defects (issue 10 items 9, 13, 15, 25)', () => {
  let t: TestServer;
  let m1: string;
  beforeAll(async () => {
    t = await startTestServer();
    m1 = await publishFiles(t, 'shop', 'web', '1.0.0', { 'index.html': 'one' });
    await publishFiles(t, 'shop', 'web', '1.0.1', { 'index.html': 'two' });
  });
  afterAll(async () => {
    await t.cleanup();
  });

  it('POST /rollback and GET /audit exist at the root paths too', async () => {
    expect((await call(t.url, 'POST', '/promote', { token: t.admin, json: { project: 'shop', app: 'web', version: '1.0.0' } })).status).toBe(200);
    expect((await call(t.url, 'POST', '/promote', { token: t.admin, json: { project: 'shop', app: 'web', version: '1.0.1' } })).status).toBe(200);
    const rb = await call(t.url, 'POST', '/rollback', { token: t.admin, json: { project: 'shop', app: 'web' } });
    expect(rb.status).toBe(200);
    expect(rb.json()).toMatchObject({ version: '1.0.0', channel: 'promoted' });
    const audit = await call(t.url, 'GET', '/audit?action=rollback', { token: t.admin });
    expect(audit.status).toBe(200);
    expect(audit.json()).toMatchObject({ total: 1, items: [expect.objectContaining({ action: 'rollback', version: '1.0.0' })] });
  });

  it('GET /manifest/{p}/{a}/{hash} accepts a manifest digest (with or without sha256:)', async () => {
    for (const hash of [m1, m1.slice(7)]) {
      const r = await call(t.url, 'GET', `/manifest/shop/web/${hash}`, { token: t.admin });
      expect(r.status, hash).toBe(200);
      expect(r.headers['x-kk-version']).toBe('1.0.0');
      expect(r.headers['x-kk-manifest-digest']).toBe(m1);
      expect(sha256Digest(r.body)).toBe(m1);
    }
    expect((await call(t.url, 'GET', `/manifest/shop/web/${sha256Digest(Buffer.from('none'))}`, { token: t.admin })).status).toBe(404);
    // A digest of another app's manifest is not this app's version.
    const other = await publishFiles(t, 'shop', 'api', '1.0.0', { 'x': 'x' });
    expect((await call(t.url, 'GET', `/manifest/shop/web/${other}`, { token: t.admin })).status).toBe(404);
  });

  it('the audit response has a total, with and without filters', async () => {
    const all = (await call(t.url, 'GET', '/api/v1/audit?limit=2', { token: t.admin })).json();
    expect(all.items).toHaveLength(2);
    expect(all.total).toBeGreaterThan(2);
    const pushes = (await call(t.url, 'GET', '/api/v1/audit?action=push&limit=1', { token: t.admin })).json();
    expect(pushes).toMatchObject({ total: 3, next_offset: 1 });
  });

  it('a pull token that pushes is told its real scope and permissions', async () => {
    const puller = await mintToken(t, 'app:shop/web', ['pull']);
    const data = Buffer.from('a chunk');
    const r = await call(t.url, 'PUT', `/api/v1/chunks/${sha256Digest(data)}`, { token: puller, body: Buffer.concat([Buffer.from([0]), data]) });
    expect(r.status).toBe(403);
    const msg = r.json().error.message as string;
    expect(msg).toContain('app:shop/web');
    expect(msg).toContain('pull');
    expect(msg).not.toContain('whole store');
  });

  it('a non-admin token gets 403 from every webhook route, DELETE included', async () => {
    const w = (await call(t.url, 'POST', '/webhooks', { token: t.admin, json: { name: 'h', url: 'http://127.0.0.1:9/x', events: ['push'] } })).json();
    const pusher = await mintToken(t, 'project:shop', ['push', 'pull']);
    for (const method of ['GET', 'DELETE', 'PUT']) {
      const r = await call(t.url, method, `/webhooks/${w.id}`, { token: pusher, ...(method === 'PUT' ? { json: { active: false } } : {}) });
      expect(r.status, method).toBe(403);
    }
    expect((await call(t.url, 'GET', `/webhooks/${w.id}`, { token: t.admin })).json()).toMatchObject({ id: w.id, active: true });
  });

  it('push leases are capped in length and bound to the token that took them', async () => {
    const a = await mintToken(t, 'app:shop/web', ['push']);
    const b = await mintToken(t, 'app:shop/api', ['push']);
    const lease = (expires: number) => ({ holder: 'test', created: new Date().toISOString(), expires, chunks: [] });
    const key = '/api/v1/objects/locks/push/x1';
    expect((await call(t.url, 'PUT', key, { token: a, json: lease(Date.now() + 100 * 86_400_000) })).status).toBe(400);
    expect((await call(t.url, 'PUT', key, { token: a, json: lease(Date.now() + 3_600_000) })).status).toBe(201);
    expect((await call(t.url, 'PUT', key, { token: b, json: lease(Date.now() + 3_600_000) })).status).toBe(403);
    expect((await call(t.url, 'DELETE', key, { token: b })).status).toBe(403);
    expect((await call(t.url, 'GET', key, { token: a })).status).toBe(200);
    expect((await call(t.url, 'PUT', key, { token: a, json: lease(Date.now() + 3_600_000) })).status).toBe(201);
    expect((await call(t.url, 'DELETE', key, { token: a })).status).toBe(204);
    expect((await call(t.url, 'GET', key, { token: a })).status).toBe(404);
    // A global admin may clear anyone's lease.
    expect((await call(t.url, 'PUT', key, { token: b, json: lease(Date.now() + 60_000) })).status).toBe(201);
    expect((await call(t.url, 'DELETE', key, { token: t.admin })).status).toBe(204);
  });

  it('a raw chunk larger than the store\'s maximum chunk size is refused', async () => {
    const cfg = JSON.parse((await call(t.url, 'GET', '/api/v1/objects/kk-store.json', { token: t.admin })).body.toString());
    const data = randomBytes(cfg.chunking.max + 1);
    const digest = sha256Digest(data);
    const r = await call(t.url, 'PUT', `/api/v1/chunks/${digest}`, { token: t.admin, body: Buffer.concat([Buffer.from([0]), data]) });
    expect(r.status).toBe(422);
    expect(r.json().error.code).toBe('CHUNK_CORRUPT');
    expect((await call(t.url, 'GET', `/api/v1/chunks/${digest}`, { token: t.admin })).status).toBe(404);
  });
});

describe('request logs (issue 10 items 15, 25)', () => {
  it('an aborted upload is logged as the client\'s abort (499), not a 500; chunk requests log at debug only', async () => {
    for (const level of ['info', 'debug'] as const) {
      const s = await startFaultyServer(level);
      try {
        const u = new URL(s.url);
        const digest = sha256Digest(Buffer.from('never sent whole'));
        await new Promise<void>((resolve) => {
          const req = rawRequest({ host: u.hostname, port: u.port, method: 'PUT', path: `/api/v1/chunks/${digest}`, headers: { authorization: `Bearer ${s.admin}`, 'content-length': '100000' } });
          req.on('error', () => resolve());
          req.write(Buffer.alloc(1000));
          setTimeout(() => {
            req.destroy();
            resolve();
          }, 100);
        });
        const data = Buffer.from('a whole chunk');
        const ok = await call(s.url, 'PUT', `/api/v1/chunks/${sha256Digest(data)}`, { token: s.admin, body: Buffer.concat([Buffer.from([0]), data]) });
        expect(ok.status).toBe(201);
        await call(s.url, 'GET', '/api/v1/whoami', { token: s.admin });
        await waitFor('the log lines', async () => s.logs.some((l) => l.route === '/api/v1/whoami'));
        expect(s.logs.filter((l) => l.level === 'error')).toEqual([]);
        const chunkLines = s.logs.filter((l) => l.msg === 'request' && l.route === '/api/v1/chunks/{digest}');
        if (level === 'info') expect(chunkLines).toEqual([]);
        else {
          expect(chunkLines.map((l) => [l.level, l.status]).sort()).toEqual([
            ['debug', 201],
            ['debug', 499],
          ]);
        }
        expect(s.logs.find((l) => l.route === '/api/v1/whoami')).toMatchObject({ level: 'info', status: 200 });
      } finally {
        await s.close();
      }
    }
  });
});
