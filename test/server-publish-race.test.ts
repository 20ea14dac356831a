// Issue 10 item 1 as it was reported: publishing 8-way through the seed's API (init -> PUT /file
// -> finish) on a file store, with a webhook subscribed. Leases, outbox entries, claims and
// upload sessions are created and removed in sibling directories all the time. Every request
// must succeed, every version exist, and every push event be delivered exactly once, with the
// queue empty at the end. Bounded by count (8 workers x 20 versions).
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { startServer, type RunningServer } from '@kk/server';

const WORKERS = 8;
const PER_WORKER = 20;
const admin = `admin-${randomBytes(8).toString('hex')}`;
let root: string;
let srv: RunningServer;
let rx: Server;
const received: { type: string; version: string }[] = [];

async function call(method: string, path: string, body?: unknown, raw?: Buffer): Promise<{ status: number; json: any }> {
  const res = await request(`${srv.url}${path}`, {
    method: method as 'GET',
    headers: { authorization: `Bearer ${admin}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: raw ?? (body === undefined ? null : JSON.stringify(body)),
  });
  const text = await res.body.text();
  return { status: res.statusCode, json: text ? JSON.parse(text) : undefined };
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'kk-publish-race-'));
  rx = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      received.push(JSON.parse(Buffer.concat(parts).toString('utf8')));
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => rx.listen(0, '127.0.0.1', r));
  srv = await startServer({
    store: join(root, 'store'),
    listen: '127.0.0.1:0',
    adminToken: admin,
    log: false,
    config: { hasherThreads: 1, webhookPollMs: 50, webhookBackoffMs: 20, webhookBackoffMaxMs: 100 },
  });
  const hook = await call('POST', '/webhooks', { name: 'race', url: `http://127.0.0.1:${(rx.address() as AddressInfo).port}/`, events: ['push'] });
  expect(hook.status).toBe(201);
});
afterAll(async () => {
  await srv?.close();
  rx?.closeAllConnections();
  await new Promise<void>((r) => rx?.close(() => r()));
  await rm(root, { recursive: true, force: true });
});

describe('8-way publishing through the seed API on a file store', () => {
  it('no request fails, every version exists, every push event is delivered once', async () => {
    const failures: string[] = [];
    const worker = async (w: number) => {
      for (let i = 0; i < PER_WORKER; i++) {
        const version = `w${w}-${i}`;
        const files = { 'index.html': Buffer.from(`page ${version}`), [`assets/${version}.js`]: randomBytes(3000) };
        const init = await call('POST', '/upload/init', { project: 'race', app: `app${w % 2}`, version });
        if (init.status !== 201) failures.push(`init ${version}: ${init.status} ${JSON.stringify(init.json)}`);
        for (const [p, data] of Object.entries(files)) {
          const put = await call('PUT', `/file/race/app${w % 2}/${version}?path=${encodeURIComponent(p)}`, undefined, data);
          if (put.status !== 201) failures.push(`put ${version} ${p}: ${put.status} ${JSON.stringify(put.json)}`);
        }
        const fin = await call('POST', '/upload/finish', { upload_id: init.json?.upload_id });
        if (fin.status !== 201) failures.push(`finish ${version}: ${fin.status} ${JSON.stringify(fin.json)}`);
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
    expect(failures).toEqual([]);
    const listed = [0, 1].map(async (a) => (await call('GET', `/projects/race/apps/app${a}/versions?limit=500`)).json.total);
    expect((await Promise.all(listed)).reduce((s, n) => s + n, 0)).toBe(WORKERS * PER_WORKER);
    const deadline = Date.now() + 60_000;
    while (received.length < WORKERS * PER_WORKER && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(new Set(received.map((e) => e.version)).size).toBe(WORKERS * PER_WORKER);
    expect(received).toHaveLength(WORKERS * PER_WORKER);
    const metrics = await request(`${srv.url}/metrics`).then((r) => r.body.text());
    expect(/^kk_webhook_queue_depth (\d+)/m.exec(metrics)?.[1]).toBe('0');
  });
});
