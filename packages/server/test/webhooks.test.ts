// Events and webhooks (seed 9, acceptance 6) with a real receiver on 127.0.0.1: signatures,
// a receiver that hangs or is down never holds up the request, retries until it is back, the
// outbox survives a server restart, and the delivery log shows every attempt.
import { createHmac } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HIDDEN_WEBHOOK_PREFIX } from '@kk/control';
import { parseServerConfig } from '../src/index.js';
import { call, openControl, publishFiles, startTestServer, waitFor, type TestServer } from './helpers.js';

interface Received {
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A webhook receiver on 127.0.0.1 that can answer, fail, hang, or be down. */
class Receiver {
  received: Received[] = [];
  mode: 'ok' | 'fail' | 'hang' = 'ok';
  hanging: ServerResponse[] = [];
  port = 0;
  private server: Server | undefined;

  async start(): Promise<this> {
    const server = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (d: Buffer) => parts.push(d));
      req.on('end', () => {
        if (this.mode === 'hang') {
          this.hanging.push(res);
          return;
        }
        if (this.mode === 'fail') {
          res.writeHead(500).end('down for maintenance');
          return;
        }
        this.received.push({ headers: req.headers, body: Buffer.concat(parts) });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    for (const res of this.hanging.splice(0)) res.destroy();
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  events(type?: string): { headers: IncomingHttpHeaders; body: Record<string, any>; raw: Buffer }[] {
    return this.received.map((r) => ({ headers: r.headers, body: JSON.parse(r.body.toString('utf8')), raw: r.body })).filter((e) => !type || e.body.type === type);
  }
}

const validSignature = (secret: string, r: { headers: IncomingHttpHeaders; raw: Buffer }) =>
  r.headers['x-kk-signature-256'] === `sha256=${createHmac('sha256', secret).update(r.raw).digest('hex')}`;

let t: TestServer;
const receivers: Receiver[] = [];
const receiver = async () => {
  const r = await new Receiver().start();
  receivers.push(r);
  return r;
};

beforeAll(async () => {
  t = await startTestServer({ webhookMaxAttempts: 1000 });
});
afterAll(async () => {
  await t.cleanup();
});
afterEach(async () => {
  for (const r of receivers.splice(0)) await r.stop();
});

async function hook(target: Receiver | string, events: string[], extra: Record<string, unknown> = {}, server = t): Promise<{ id: string; secret: string }> {
  const r = await call(server.url, 'POST', '/webhooks', { token: server.admin, json: { name: `h${Date.now()}`, url: typeof target === 'string' ? target : target.url, events, ...extra } });
  expect(r.status).toBe(201);
  return r.json();
}

const deliveries = async (id: string, server = t) => (await call(server.url, 'GET', `/webhooks/${id}/deliveries?limit=500`, { token: server.admin })).json().items;

/** Deliveries still pending in the control database (the outbox). */
async function pendingDeliveries(t: TestServer): Promise<number> {
  const control = await openControl(t);
  try {
    return await control.webhooks.depth();
  } finally {
    await control.close();
  }
}

describe('webhook deliveries', () => {
  it('a receiver gets push and promote events with valid HMAC-SHA256 signatures, event and delivery ids', async () => {
    const rx = await receiver();
    const { id, secret } = await hook(rx, ['push', 'promote'], { secret: 'a-shared-secret', project: 'evt' });
    expect(secret).toBe('a-shared-secret');
    const manifest = await publishFiles(t, 'evt', 'app', 'v1', { 'a.txt': 'a' });
    await call(t.url, 'POST', '/promote', { token: t.admin, json: { project: 'evt', app: 'app', version: 'v1' }, headers: { 'x-kk-agent': 'deployer-7' } });
    await publishFiles(t, 'other', 'app', 'v1', { 'b.txt': 'b' });
    await waitFor('push and promote', async () => rx.events().length >= 2);
    const [push, promote] = [rx.events('push')[0]!, rx.events('promote')[0]!];
    expect(push.body).toMatchObject({ type: 'push', project: 'evt', app: 'app', version: 'v1', manifest });
    expect(promote.body).toMatchObject({ type: 'promote', project: 'evt', app: 'app', version: 'v1', channel: 'promoted', actor: { agent: 'deployer-7' } });
    for (const e of [push, promote]) {
      expect(validSignature('a-shared-secret', e)).toBe(true);
      expect(validSignature('another-secret', e)).toBe(false);
      expect(e.headers['x-kk-event-id']).toBe(e.body.id);
      expect(e.headers['x-kk-delivery-id']).toMatch(/^dl-/);
      expect(e.headers['x-kk-event']).toBe(e.body.type);
    }
    // Filtered by project: the other project's push was not sent.
    expect(rx.events().every((e) => e.body.project === 'evt')).toBe(true);
    const log = await deliveries(id);
    expect(log.map((d: { state: string }) => d.state)).toEqual(['delivered', 'delivered']);
  });

  it('a hanging receiver does not hold up the push that caused the event', async () => {
    const rx = await receiver();
    rx.mode = 'hang';
    await hook(rx, ['push']);
    await publishFiles(t, 'hang', 'app', 'v1', { 'a.txt': 'a' });
    // The push has returned, while the receiver still holds the delivery unanswered.
    await waitFor('the delivery to reach the receiver', async () => rx.hanging.length > 0);
    expect(rx.received).toHaveLength(0);
    const second = await publishFiles(t, 'hang', 'app', 'v2', { 'a.txt': 'b' });
    expect(second).toMatch(/^sha256:/);
  });

  it('while the receiver is down pushes succeed; the event arrives once it is back, and the log shows every attempt', async () => {
    const rx = await receiver();
    const { id, secret } = await hook(rx, ['push']);
    await rx.stop(); // down: connections are refused
    const manifest = await publishFiles(t, 'down', 'app', 'v1', { 'a.txt': 'a' });
    const failed = await waitFor('two failed attempts', async () => {
      const [d] = await deliveries(id);
      return d && d.attempts.length >= 2 && d;
    });
    expect(failed.state).toBe('pending');
    expect(failed.attempts.every((a: { error?: string }) => a.error)).toBe(true);
    rx.mode = 'fail';
    await rx.start(); // up again on the same port, answering 500 for a while
    await waitFor('an attempt answered 500', async () => (await deliveries(id))[0].attempts.some((a: { status?: number }) => a.status === 500));
    rx.mode = 'ok';
    await waitFor('the push event', async () => rx.events('push').length > 0);
    const e = rx.events('push')[0]!;
    expect(e.body).toMatchObject({ type: 'push', project: 'down', version: 'v1', manifest });
    expect(validSignature(secret, e)).toBe(true);
    const [d] = await waitFor('the log to say delivered', async () => {
      const log = await deliveries(id);
      return log[0]?.state === 'delivered' && log;
    });
    const statuses = d.attempts.map((a: { status?: number; error?: string }) => a.status ?? 'error');
    expect(statuses[0]).toBe('error');
    expect(statuses).toContain(500);
    expect(statuses[statuses.length - 1]).toBe(204);
    expect(d.attempts.map((a: { n: number }) => a.n)).toEqual(d.attempts.map((_: unknown, i: number) => i + 1));
    expect(d.event_id).toBe(e.body.id);
  });

  it('undelivered events survive a server restart and are delivered by the next instance', async () => {
    const t2 = await startTestServer({ webhookMaxAttempts: 1000 });
    try {
      const rx = await receiver();
      const { id } = await hook(rx, ['push'], {}, t2);
      await rx.stop();
      const manifest = await publishFiles(t2, 'restart', 'app', 'v1', { 'a.txt': 'a' });
      await t2.stop();
      expect(await pendingDeliveries(t2)).toBe(1);
      await rx.start();
      await new Promise((r) => setTimeout(r, 300));
      expect(rx.received).toHaveLength(0); // nobody is running to deliver it
      const t3 = await t2.restart();
      try {
        await waitFor('the event after the restart', async () => rx.events('push').length > 0);
        expect(rx.events('push')[0]!.body).toMatchObject({ project: 'restart', version: 'v1', manifest });
        const [d] = await waitFor('delivered in the log', async () => {
          const log = await deliveries(id, t3);
          return log[0]?.state === 'delivered' && log;
        });
        expect(d.attempts.at(-1).status).toBe(204);
        await waitFor('an empty outbox', async () => (await pendingDeliveries(t3)) === 0);
      } finally {
        await t3.stop();
      }
    } finally {
      await t2.cleanup();
    }
  });

  it('redelivery sends the same event again under a new delivery id', async () => {
    const rx = await receiver();
    const { id } = await hook(rx, ['delete']);
    await publishFiles(t, 'redo', 'app', 'v1', { 'a.txt': 'a' });
    expect((await call(t.url, 'DELETE', '/api/v1/projects/redo/apps/app/versions/v1', { token: t.admin })).status).toBe(204);
    await waitFor('the delete event', async () => rx.events('delete').length === 1);
    const [first] = await deliveries(id);
    const again = await call(t.url, 'POST', `/webhooks/${id}/deliveries/${first.id}/redeliver`, { token: t.admin });
    expect(again.status).toBe(202);
    await waitFor('the redelivery', async () => rx.events('delete').length === 2);
    const [a, b] = rx.events('delete');
    expect(b!.body.id).toBe(a!.body.id);
    expect(b!.headers['x-kk-delivery-id']).not.toBe(a!.headers['x-kk-delivery-id']);
    expect(b!.raw.equals(a!.raw)).toBe(true);
  });
});

describe('webhook ping', () => {
  it('sends a signed ping to that webhook alone, logged as a delivery; an unknown id is 404', async () => {
    const rx = await receiver();
    const other = await receiver();
    const { id, secret } = await hook(rx, ['push']);
    await hook(other, ['*']);
    const r = await call(t.url, 'POST', `/webhooks/${id}/ping`, { token: t.admin });
    expect(r.status).toBe(202);
    expect(r.json()).toMatchObject({ webhook: id, event: 'ping', state: 'pending' });
    await waitFor('the ping', async () => rx.events('ping').length === 1);
    const [p] = rx.events('ping');
    expect(p!.body).toMatchObject({ type: 'ping', webhook: id });
    expect(validSignature(secret, p!)).toBe(true);
    expect((await deliveries(id)).some((d: { event: string; state: string }) => d.event === 'ping' && d.state === 'delivered')).toBe(true);
    expect(other.events('ping')).toEqual([]);
    expect((await call(t.url, 'POST', '/webhooks/wh-0000000000000000/ping', { token: t.admin })).status).toBe(404);
  });
});

describe("kk's hidden deploy-callback hooks", () => {
  it('are neither listed nor reachable by id through the webhook API', async () => {
    const control = await openControl(t);
    try {
      await control.webhooks.create({ name: 'callback', url: 'http://127.0.0.1:9/cb', events: ['deploy.success'] }, 'api', `${HIDDEN_WEBHOOK_PREFIX}0123456789abcdef`);
    } finally {
      await control.close();
    }
    const list = (await call(t.url, 'GET', '/webhooks?limit=500', { token: t.admin })).json();
    expect(list.items.map((w: { id: string }) => w.id).filter((id: string) => id.startsWith(HIDDEN_WEBHOOK_PREFIX))).toEqual([]);
    for (const [method, suffix] of [['GET', ''], ['DELETE', ''], ['GET', '/deliveries']] as const) {
      const r = await call(t.url, method, `/webhooks/${HIDDEN_WEBHOOK_PREFIX}0123456789abcdef${suffix}`, { token: t.admin });
      expect(r.status).toBe(404);
    }
  });
});

describe('webhooks from the config file (seed 9.3)', () => {
  it('are created at start and deliver their events', async () => {
    const rx = await receiver();
    const { config } = parseServerConfig(`
webhooks:
  - name: ci_trigger
    event: push
    url: ${rx.url}
    secret: config-secret-1
  - name: slack_notify
    event: promote
    url: ${rx.url}
`);
    const t2 = await startTestServer(config);
    try {
      const list = (await call(t2.url, 'GET', '/webhooks', { token: t2.admin })).json().items;
      expect(list.map((w: { id: string; source: string }) => [w.id, w.source]).sort()).toEqual([
        ['cfg-ci_trigger', 'config'],
        ['cfg-slack_notify', 'config'],
      ]);
      await publishFiles(t2, 'cfg', 'app', 'v1', { 'a.txt': 'a' });
      await waitFor('the push event', async () => rx.events('push').length > 0);
      expect(validSignature('config-secret-1', rx.events('push')[0]!)).toBe(true);
      expect(rx.events('promote')).toHaveLength(0);
    } finally {
      await t2.cleanup();
    }
  });
});
