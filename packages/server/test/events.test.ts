// GET /api/v1/events (issue 11, DESIGN 12): every state change with a monotonically increasing
// seq, cursor-paged; lists carry the current seq so a client can follow from there without a gap.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, mintToken, publishFiles, startTestServer, type TestServer } from './helpers.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => t.cleanup());

const events = async (q: string, token = t.admin) => {
  const r = await call(t.url, 'GET', `/api/v1/events${q}`, { token });
  expect(r.status).toBe(200);
  return r.json();
};

describe('the event stream', () => {
  it('push, promote, token and webhook changes each append an event; lists carry the seq to follow from', async () => {
    const start = (await call(t.url, 'GET', '/projects', { token: t.admin })).json().seq;
    expect(start).toEqual(expect.any(Number));
    const manifest = await publishFiles(t, 'ev', 'site', 'v1', { 'a.txt': 'a' });
    expect((await call(t.url, 'POST', '/promote', { token: t.admin, json: { project: 'ev', app: 'site', version: 'v1' } })).status).toBe(200);
    await mintToken(t, 'project:ev', ['pull']);
    expect((await call(t.url, 'POST', '/webhooks', { token: t.admin, json: { url: 'http://127.0.0.1:9/x', events: ['push'] } })).status).toBe(201);
    const page = await events(`?since=${start}`);
    expect(page.items.map((e: { type: string }) => e.type)).toEqual(['push', 'promote', 'token.create', 'webhook.create']);
    expect(page.items[0]).toMatchObject({ type: 'push', project: 'ev', app: 'site', version: 'v1', manifest, actor: { token: 'admin' } });
    const seqs = page.items.map((e: { seq: number }) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(seqs[0]).toBeGreaterThan(start);
    expect(page).toMatchObject({ more: false, next_since: seqs.at(-1), seq: seqs.at(-1) });
    for (const path of ['/projects', '/projects/ev/apps', '/projects/ev/apps/site/versions', '/api/v1/tokens', '/webhooks', '/api/v1/audit']) {
      expect((await call(t.url, 'GET', path, { token: t.admin })).json().seq, path).toBe(seqs.at(-1));
    }
    // Paging by since: two at a time reaches the same events.
    const paged: number[] = [];
    let since = start;
    for (let i = 0; i < 10; i++) {
      const p = await events(`?since=${since}&limit=2`);
      paged.push(...p.items.map((e: { seq: number }) => e.seq));
      since = p.next_since;
      if (!p.more) break;
    }
    expect(paged).toEqual(seqs);
    expect((await events(`?since=${seqs.at(-1)}`)).items).toEqual([]);
    expect((await events(`?since=${start}&type=promote`)).items.map((e: { type: string }) => e.type)).toEqual(['promote']);
  });

  it('a scoped token sees its project only; bad parameters are 400', async () => {
    await publishFiles(t, 'other', 'app', 'v1', { 'b.txt': 'b' });
    const scoped = await mintToken(t, 'project:ev', ['pull']);
    const mine = await events('?since=0&limit=500', scoped);
    expect(mine.items.length).toBeGreaterThan(0);
    expect(mine.items.every((e: { project?: string }) => e.project === 'ev')).toBe(true);
    for (const q of ['?since=-1', '?since=abc', '?limit=0']) expect((await call(t.url, 'GET', `/api/v1/events${q}`, { token: t.admin })).status, q).toBe(400);
    expect((await call(t.url, 'GET', '/api/v1/events')).status).toBe(401);
  });
});
