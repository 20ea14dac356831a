// Several server instances on one S3 store (s3rver) and one PostgreSQL (issue 11, acceptance 2):
// a token minted through one is accepted by the other at once and its revocation refused there
// on the next request; a webhook registered on one is delivered exactly once for a push through
// the other; the scheduled retention, fired on both at the same moment, runs once; and a run
// whose instance died mid-run is taken over by the other.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type PostgresBackend, type S3rverBackend, postgresUnavailable, s3rverUnavailable, startPostgres, startS3rver } from '@kk/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Control } from '@kk/control';
import { startServer, type RunningServer } from '../src/index.js';
import { FAST_WEBHOOKS, call, publishFiles, waitFor, type TestServer } from './helpers.js';

const unavailable = postgresUnavailable() ?? s3rverUnavailable();
if (unavailable && process.env.CI) throw new Error(`CI must run the cluster tests: ${unavailable}`);

describe.skipIf(!!unavailable)(`two instances on one s3 store and one PostgreSQL${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let s3: S3rverBackend;
  let pg: PostgresBackend;
  let db: string;
  let a: RunningServer;
  let b: RunningServer;
  const admin = 'cluster-admin-token-0123456789';
  const received: { body: Record<string, any>; delivery: string }[] = [];
  let rx: Server;
  let rxUrl: string;
  const env: Record<string, string | undefined> = {};

  const start = () =>
    startServer({
      store: s3.storeUrl('kk'),
      db,
      listen: '127.0.0.1:0',
      adminToken: admin,
      log: false,
      config: { hasherThreads: 1, ...FAST_WEBHOOKS, retainVersions: 1, gcGraceMs: 0 },
    });

  beforeAll(async () => {
    [s3, pg] = await Promise.all([startS3rver(), startPostgres()]);
    for (const [k, v] of Object.entries(s3.env)) {
      env[k] = process.env[k];
      process.env[k] = v;
    }
    db = await pg.createDatabase();
    [a, b] = await Promise.all([start(), start()]);
    rx = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (d: Buffer) => parts.push(d));
      req.on('end', () => {
        received.push({ body: JSON.parse(Buffer.concat(parts).toString('utf8')), delivery: String(req.headers['x-kk-delivery-id']) });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => rx.listen(0, '127.0.0.1', r));
    rxUrl = `http://127.0.0.1:${(rx.address() as AddressInfo).port}/hook`;
  });
  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
    rx?.closeAllConnections();
    await new Promise<void>((r) => (rx ? rx.close(() => r()) : r()));
    await Promise.all([s3?.stop(), pg?.stop()]);
    for (const [k, v] of Object.entries(env)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  const as = (s: RunningServer) => ({ url: s.url, admin }) as TestServer;

  it('a token minted through one is accepted by the other at once; revoked through one, refused by the other on the next request', async () => {
    const r = await call(a.url, 'POST', '/api/v1/tokens', { token: admin, json: { scope: 'project:web', permissions: ['pull'] } });
    expect(r.status).toBe(201);
    const token = r.json().token;
    expect((await call(b.url, 'GET', '/api/v1/whoami', { token })).status).toBe(200);
    expect((await call(b.url, 'DELETE', `/api/v1/tokens/${r.json().id}`, { token: admin })).status).toBe(200);
    expect((await call(a.url, 'GET', '/api/v1/whoami', { token })).status).toBe(401);
  });

  it('a webhook registered on one is delivered exactly once for a push through the other', async () => {
    const w = await call(a.url, 'POST', '/webhooks', { token: admin, json: { name: 'cluster', url: rxUrl, events: ['push'] } });
    expect(w.status).toBe(201);
    for (let i = 1; i <= 5; i++) await publishFiles(as(i % 2 ? b : a), 'web', 'site', `v${i}`, { 'index.html': `v${i}` });
    await waitFor('five push deliveries', async () => received.length >= 5);
    // Both dispatchers poll every 100 ms: give a duplicate the chance to show up.
    await new Promise((r) => setTimeout(r, 1_000));
    expect(received.map((x) => x.body.version).sort()).toEqual(['v1', 'v2', 'v3', 'v4', 'v5']);
    expect(new Set(received.map((x) => x.delivery)).size).toBe(5);
    const log = (await call(b.url, 'GET', `/webhooks/${w.json().id}/deliveries`, { token: admin })).json();
    expect(log.total).toBe(5);
    expect(log.items.every((d: { state: string; attempts: unknown[] }) => d.state === 'delivered' && d.attempts.length === 1)).toBe(true);
    // Both instances see the same event stream.
    const ea = (await call(a.url, 'GET', '/api/v1/events?since=0&limit=500', { token: admin })).json();
    const eb = (await call(b.url, 'GET', '/api/v1/events?since=0&limit=500', { token: admin })).json();
    expect(ea.items).toEqual(eb.items);
    expect(ea.items.filter((e: { type: string }) => e.type === 'push')).toHaveLength(5);
  });

  it('the scheduled retention, fired on both at the same moment, runs once', async () => {
    const at = new Date();
    const ran = await Promise.all([a.server.retention.scheduled(at), b.server.retention.scheduled(at)]);
    expect(ran.sort()).toEqual([false, true]);
    const runs = (await call(a.url, 'GET', '/api/v1/audit?action=retention', { token: admin })).json();
    expect(runs.total).toBe(1);
    // Retention kept one version of web/site and deleted the other four, each once.
    const deletes = (await call(b.url, 'GET', '/api/v1/audit?action=delete&project=web', { token: admin })).json();
    expect(deletes.items.map((e: { version: string }) => e.version).sort()).toEqual(['v1', 'v2', 'v3', 'v4']);
    const versions = (await call(b.url, 'GET', '/projects/web/apps/site/versions', { token: admin })).json().items;
    expect(versions.map((v: { version: string }) => v.version)).toEqual(['v5']);
  });

  it('a scheduled run whose instance died mid-run is taken over by the other', async () => {
    const control = await Control.open(db);
    try {
      // An instance claimed the 04:00 run with a lease that has already lapsed, then vanished.
      expect(await control.leases.claimRun('retention', '2026-01-02T04:00:00', 'dead-instance', 1, Date.now() - 10)).toBe(true);
      const slots = await b.server.retention.resumeStale();
      expect(slots).toEqual(['2026-01-02T04:00:00']);
      expect(await control.leases.run('retention', '2026-01-02T04:00:00')).toMatchObject({ state: 'done', attempts: 2 });
      expect(await a.server.retention.resumeStale()).toEqual([]);
      expect((await call(a.url, 'GET', '/api/v1/audit?action=retention', { token: admin })).json().total).toBe(2);
    } finally {
      await control.close();
    }
  });
});
