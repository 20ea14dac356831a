// The WebSocket event stream (ws.ts) on a real server with real ws clients: replay from `since`
// then live without a gap or a duplicate, type filters, the token as a subprotocol or a header,
// project scoping, close codes for bad tokens and queries, revocation at the next ping, a client
// that stops reading dropped with 4429 (the server does not buffer for it), and 1001 on shutdown.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { call, mintToken, startTestServer, type TestServer, waitFor } from './helpers.js';

let t: TestServer;
const saved = { ...process.env };
beforeAll(async () => {
  // Read when the server starts listening: a fast ping and a small per-connection buffer.
  process.env.KK_EVENTS_PING_MS = '500';
  process.env.KK_EVENTS_MAX_BUFFER = String(64 * 1024);
  t = await startTestServer();
});
afterAll(async () => {
  await t?.cleanup();
  for (const k of ['KK_EVENTS_PING_MS', 'KK_EVENTS_MAX_BUFFER']) if (saved[k] === undefined) delete process.env[k];
});

interface Client {
  ws: WebSocket;
  msgs: { op: string; seq?: number; event?: { seq: number; type: string; project?: string } }[];
  closed: Promise<{ code: number; reason: string }>;
  events(): { seq: number; type: string; project?: string }[];
}

function connect(query: string, auth: { protocol?: string; header?: string } = { protocol: t.admin }): Client {
  const url = `${t.url.replace('http', 'ws')}/api/v1/events/stream${query}`;
  const protocols = ['kk.v1', ...(auth.protocol ? [`kk.bearer.${auth.protocol}`] : [])];
  const ws = new WebSocket(url, protocols, auth.header ? { headers: { authorization: `Bearer ${auth.header}` } } : {});
  const msgs: Client['msgs'] = [];
  ws.on('message', (d) => msgs.push(JSON.parse(String(d))));
  ws.on('error', () => {});
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
  return { ws, msgs, closed, events: () => msgs.filter((m) => m.op === 'event').map((m) => m.event!) };
}

const emit = (type: string, project?: string, details?: Record<string, unknown>) =>
  t.server.server.control.events.emit({ type, ...(project ? { project, app: 'web' } : {}), actor: { token: 'test' }, ...(details ? { details } : {}) });

describe('the WebSocket event stream', () => {
  it('replays from since, then follows live, in seq order, each event once; type filters and prefixes', async () => {
    const start = (await call(t.url, 'GET', '/api/v1/events?since=0', { token: t.admin })).json().seq as number;
    for (let i = 0; i < 5; i++) await emit(i % 2 ? 'task.failed' : 'node.online', 'shop', { i });
    const all = connect(`?since=${start}`);
    const tasks = connect(`?since=${start}&type=task.*,sync.conflict`, { header: t.admin });
    await waitFor('replay', async () => all.msgs.some((m) => m.op === 'live') && tasks.msgs.some((m) => m.op === 'live'));
    expect(all.ws.protocol).toBe('kk.v1');
    expect(all.msgs[0]).toMatchObject({ op: 'hello', protocol: 'kk.v1', since: start, seq: start + 5, token: 'admin' });
    expect(all.events().map((e) => e.seq)).toEqual([1, 2, 3, 4, 5].map((n) => start + n));
    // Live: appended after the replay ended.
    for (let i = 0; i < 4; i++) await emit(i % 2 ? 'task.running' : 'target.paused', 'shop');
    await emit('sync.conflict', 'shop');
    await waitFor('live events', async () => all.events().length === 10 && tasks.events().length === 5);
    const seqs = all.events().map((e) => e.seq);
    expect(seqs).toEqual(Array.from({ length: 10 }, (_, i) => start + 1 + i));
    expect(tasks.events().map((e) => e.type)).toEqual(['task.failed', 'task.failed', 'task.running', 'task.running', 'sync.conflict']);
    // Without since: only what comes after.
    const now = connect('');
    await waitFor('live', async () => now.msgs.some((m) => m.op === 'live'));
    await emit('node.offline');
    await waitFor('one event', async () => now.events().length === 1);
    expect(now.events()[0]).toMatchObject({ type: 'node.offline', seq: start + 11 });
    for (const c of [all, tasks, now]) c.ws.close();
  });

  it('scopes a project token; refuses bad tokens and queries with close codes; a revoked token is cut at the next ping', async () => {
    const scoped = await mintToken(t, 'project:shop', ['pull']);
    const since = (await call(t.url, 'GET', '/api/v1/events?since=0', { token: t.admin })).json().seq as number;
    await emit('task.failed', 'other');
    await emit('task.failed', 'shop');
    const mine = connect(`?since=${since}`, { protocol: scoped });
    await waitFor('replay', async () => mine.msgs.some((m) => m.op === 'live'));
    expect(mine.events().map((e) => e.project)).toEqual(['shop']);

    expect(await connect('', { protocol: 'kk_00000000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }).closed).toMatchObject({ code: 4401 });
    expect(await connect('', {}).closed).toMatchObject({ code: 4401, reason: expect.stringMatching(/missing bearer token/) });
    expect(await connect('?since=-4').closed).toMatchObject({ code: 4400, reason: expect.stringMatching(/since must be/) });
    expect(await connect('?type=BAD TYPE').closed).toMatchObject({ code: 4400 });
    const wrongPath = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`${t.url.replace('http', 'ws')}/api/v1/events/nope`, ['kk.v1']);
      ws.on('unexpected-response', (_req, res) => (resolve(res.statusCode ?? 0), ws.terminate()));
      ws.on('error', () => {});
    });
    expect(wrongPath).toBe(404);

    const id = (await call(t.url, 'GET', '/api/v1/tokens', { token: t.admin })).json().items.find((x: { id: string; scope: string }) => scoped.includes(x.id)).id;
    expect((await call(t.url, 'DELETE', `/api/v1/tokens/${id}`, { token: t.admin })).status).toBe(200);
    expect(await mine.closed).toMatchObject({ code: 4401, reason: expect.stringMatching(/revoked/) });
  });

  it('a client that stops reading is dropped with 4429 instead of being buffered for', async () => {
    const stream = t.server.server.eventStream!;
    const slow = connect('');
    await waitFor('live', async () => slow.msgs.some((m) => m.op === 'live'));
    slow.ws.pause(); // stop reading: the kernel buffers fill, then the server's
    const fat = 'x'.repeat(16 * 1024);
    const before = stream.stats().dropped;
    // ~24 MiB of events in batches: more than the socket buffers hold.
    for (let b = 0; b < 30 && stream.stats().dropped === before; b++) {
      await t.server.server.control.cdb.writeTx(async (tx) => {
        for (let i = 0; i < 50; i++) await t.server.server.control.events.append(tx, { type: 'test.fat', actor: { token: 'test' }, details: { fat } });
      });
      await new Promise((r) => setTimeout(r, 50));
    }
    await waitFor('the drop', async () => stream.stats().dropped > before, 20_000);
    slow.ws.resume();
    const end = await slow.closed;
    expect(end.code).toBe(4429);
    expect(end.reason).toMatch(/too slow.*since=\d+/);
    // It received some, not all: the rest waits in the database for its reconnect.
    expect(slow.events().length).toBeLessThan(1500);
  }, 60_000);

  it('closes every stream with 1001 when the server stops', async () => {
    const c = connect('');
    await waitFor('live', async () => c.msgs.some((m) => m.op === 'live'));
    await t.stop();
    expect(await c.closed).toMatchObject({ code: 1001, reason: 'server stopping' });
  });
});
