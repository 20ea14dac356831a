// Upgrading from the store-backed server (issue 11, acceptance 4): a file store holding tokens,
// a webhook and a pending delivery under server/ (laid out exactly as kk 0.1 wrote them) starts
// with the new server: the tokens keep working, the pending delivery is delivered, the import is
// logged; a second start imports nothing.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer } from '../src/index.js';
import { FAST_WEBHOOKS, call, testDbUrl, waitFor } from './helpers.js';

let root: string;
let rx: Server;
const received: { body: string; headers: Record<string, unknown> }[] = [];

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'kk-upgrade-'));
  rx = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      received.push({ body: Buffer.concat(parts).toString('utf8'), headers: req.headers });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => rx.listen(0, '127.0.0.1', r));
});
afterAll(async () => {
  rx.closeAllConnections();
  await new Promise<void>((r) => rx.close(() => r()));
  await rm(root, { recursive: true, force: true });
});

async function put(store: string, key: string, value: unknown): Promise<void> {
  const file = path.join(store, ...key.split('/'));
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, JSON.stringify(value));
}

describe('a store written by the store-backed server', () => {
  it('keeps its tokens, delivers its pending delivery, and is imported once', async () => {
    const store = path.join(root, 'store');
    // A store as kk 0.1 left it: start once to create kk-store.json, then lay the old state in.
    const first = await startServer({ store, db: `sqlite://${path.join(root, 'scratch.db')}`, listen: '127.0.0.1:0', adminToken: 'scratch-admin-000', log: false, config: { hasherThreads: 1 } });
    await first.close();
    const id = randomBytes(10).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const token = `kk_${id}_${secret}`;
    const created = new Date(Date.now() - 3_600_000).toISOString();
    await put(store, `server/tokens/${id}`, { id, name: 'old admin', hash: `sha256:${createHash('sha256').update(secret).digest('hex')}`, scope: 'global', permissions: ['admin'], created, expires: null, revoked: null, created_by: 'bootstrap' });
    const port = (rx.address() as AddressInfo).port;
    const hook = { id: 'wh-00112233445566ff', name: 'old hook', url: `http://127.0.0.1:${port}/hook`, events: ['push'], secret: 'old-webhook-secret', active: true, source: 'api', created, updated: created };
    await put(store, `server/webhooks/${hook.id}`, hook);
    const body = JSON.stringify({ id: 'evt-old-1', time: created, type: 'push', project: 'web', app: 'site', version: '7', actor: { token: id } });
    const delivery = { id: 'dl-0000old01-aabbccdd', webhook: hook.id, event_id: 'evt-old-1', event: 'push', body, state: 'pending', attempts: [{ n: 1, at: created, error: 'connect ECONNREFUSED', duration_ms: 1 }], created, updated: created, next_attempt: created };
    await put(store, `server/deliveries/${hook.id}/${delivery.id}`, delivery);
    await put(store, `server/outbox/${String(Date.parse(created)).padStart(13, '0')}-${delivery.id}`, { delivery: delivery.id, webhook: hook.id, attempt: 1, event_id: 'evt-old-1', event: 'push', body, created });

    const db = await testDbUrl(store);
    const logs: Record<string, unknown>[] = [];
    const srv = await startServer({ store, db, listen: '127.0.0.1:0', log: (e) => logs.push(e), config: { hasherThreads: 1, ...FAST_WEBHOOKS } });
    try {
      const imported = logs.find((l) => String(l.msg).startsWith('imported the server state'));
      expect(imported).toMatchObject({ tokens: 1, webhooks: 1, deliveries: 1, pending: 1 });
      // No new admin token was minted: the store had one.
      expect(srv.initialAdminToken).toBeUndefined();
      expect((await call(srv.url, 'GET', '/api/v1/whoami', { token })).json()).toMatchObject({ token: id, scope: 'global' });
      await waitFor('the pending delivery', async () => received.length >= 1);
      expect(received[0]!.body).toBe(body);
      expect(received[0]!.headers['x-kk-delivery-id']).toBe(delivery.id);
      expect(received[0]!.headers['x-kk-delivery-attempt']).toBe('2');
      const log = await waitFor('delivered in the log', async () => {
        const items = (await call(srv.url, 'GET', `/webhooks/${hook.id}/deliveries`, { token })).json().items;
        return items[0]?.state === 'delivered' && items;
      });
      expect(log[0].attempts.map((a: { n: number }) => a.n)).toEqual([1, 2]);
    } finally {
      await srv.close();
    }
    // A second start over the same store and database imports nothing and delivers nothing again.
    const logs2: Record<string, unknown>[] = [];
    const again = await startServer({ store, db, listen: '127.0.0.1:0', log: (e) => logs2.push(e), config: { hasherThreads: 1, ...FAST_WEBHOOKS } });
    try {
      expect(logs2.some((l) => String(l.msg).startsWith('imported'))).toBe(false);
      expect((await call(again.url, 'GET', '/api/v1/whoami', { token })).status).toBe(200);
      expect((await call(again.url, 'GET', '/api/v1/tokens', { token })).json().items).toHaveLength(1);
      await new Promise((r) => setTimeout(r, 500));
      expect(received).toHaveLength(1);
    } finally {
      await again.close();
    }
  });
});
