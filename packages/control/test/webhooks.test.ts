import { isKkError } from '@kk/core';
import { expect, it } from 'vitest';
import { type Control, type RetryPolicy, backoffMs } from '../src/index.js';
import { describeDialects, parallel } from './dialects.js';

const POLICY: RetryPolicy = { maxAttempts: 3, backoffMs: 1_000, backoffMaxMs: 10_000 };

const push = (c: Control, project = 'web', app = 'site', version = '1.0.0') =>
  c.activity({ action: 'push', token: 't1', agent: 'ci-1', address: '127.0.0.1', project, app, version, manifest: 'sha256:ab' });

describeDialects('webhooks and the outbox', (ctx) => {
  it('CRUD keeps the fields; validation refuses bad input', async () => {
    const c = await ctx.open(undefined, { webhookSecret: 'default-secret-1' });
    const w = await c.webhooks.create({ name: 'deploys', url: 'http://127.0.0.1:9/hook', events: ['push', 'promote'], project: 'web' });
    expect(w).toMatchObject({ name: 'deploys', events: ['push', 'promote'], project: 'web', active: true, source: 'api', secret: 'default-secret-1' });
    expect(await c.webhooks.get(w.id)).toEqual(w);
    const u = await c.webhooks.update(w.id, { active: false, project: null });
    expect(u).toMatchObject({ active: false });
    expect(u).not.toHaveProperty('project');
    expect(await c.webhooks.get(w.id)).toEqual(u);
    for (const bad of [{ url: 'ftp://x' }, { url: 'http://x', events: ['nope'] }, { url: 'http://x', app: 'a' }, { url: 'http://x', secret: 'short' }]) {
      await expect(c.webhooks.create(bad)).rejects.toSatisfy((e) => isKkError(e, 'CONFIG_INVALID'));
    }
    expect(await c.webhooks.remove(w.id)).toBe(true);
    expect(await c.webhooks.remove(w.id)).toBe(false);
    expect(await c.webhooks.list()).toEqual([]);
  });

  it('syncConfig makes cfg-* hooks match the config and leaves api hooks alone', async () => {
    const c = await ctx.open();
    const api = await c.webhooks.create({ url: 'http://127.0.0.1:9/a' });
    await c.webhooks.syncConfig([
      { name: 'one', url: 'http://127.0.0.1:9/1', events: ['push'] },
      { name: 'two', url: 'http://127.0.0.1:9/2', events: ['*'], project: 'web' },
    ]);
    expect((await c.webhooks.list()).map((w) => w.id).sort()).toEqual([api.id, 'cfg-one', 'cfg-two'].sort());
    await c.webhooks.syncConfig([{ name: 'two', url: 'http://127.0.0.1:9/2b', events: ['push'] }]);
    const list = await c.webhooks.list();
    expect(list.map((w) => w.id).sort()).toEqual([api.id, 'cfg-two'].sort());
    expect(list.find((w) => w.id === 'cfg-two')).toMatchObject({ url: 'http://127.0.0.1:9/2b', events: ['push'], source: 'config' });
    expect(list.find((w) => w.id === 'cfg-two')).not.toHaveProperty('project');
  });

  it('an event gets exactly one delivery per matching webhook, in the same transaction', async () => {
    const c = await ctx.open();
    const all = await c.webhooks.create({ url: 'http://127.0.0.1:9/all' });
    const web = await c.webhooks.create({ url: 'http://127.0.0.1:9/web', events: ['push'], project: 'web', app: 'site' });
    await c.webhooks.create({ url: 'http://127.0.0.1:9/other', project: 'other' });
    await c.webhooks.create({ url: 'http://127.0.0.1:9/off', active: false });
    await c.webhooks.create({ url: 'http://127.0.0.1:9/promote', events: ['promote'] });
    const r = await push(c);
    expect(r.deliveries).toHaveLength(2);
    const rows = await c.cdb.db.selectFrom('deliveries').selectAll().orderBy('webhook').execute();
    expect(rows.map((d) => d.webhook).sort()).toEqual([all.id, web.id].sort());
    for (const d of rows) {
      expect(Number(d.event_seq)).toBe(r.seq);
      expect(d.state).toBe('pending');
      const body = JSON.parse(d.body);
      expect(body).toMatchObject({ type: 'push', project: 'web', app: 'site', version: '1.0.0', manifest: 'sha256:ab', actor: { token: 't1', agent: 'ci-1', address: '127.0.0.1' } });
    }
    // A token change is an event too, but no webhook event: no delivery.
    const t = await c.activity({ action: 'token.create', token: 'admin', details: { id: 'abc' } });
    expect(t.seq).toBeGreaterThan(r.seq);
    expect(t.deliveries).toEqual([]);
    expect(await c.webhooks.depth()).toBe(2);
  });

  it('claims: one sender per delivery; success, retry with backoff, give up; a lost claim writes nothing', async () => {
    const url = await ctx.freshUrl();
    const a = await ctx.open(url, { owner: 'A' });
    const b = await ctx.open(url, { owner: 'B' });
    const hook = await a.webhooks.create({ url: 'http://127.0.0.1:9/h' });
    await push(a, 'web', 'site', '1');
    await push(a, 'web', 'site', '2');
    const claimedA = await a.webhooks.claimDue('A', 10, 60_000);
    expect(claimedA).toHaveLength(2);
    expect(await b.webhooks.claimDue('B', 10, 60_000)).toEqual([]);
    const [d1, d2] = claimedA;
    const ok = await a.webhooks.finish(d1!.id, 'A', { status: 204, duration_ms: 3 }, POLICY);
    expect(ok).toMatchObject({ state: 'delivered', next_attempt: null, attempts: [{ n: 1, status: 204, duration_ms: 3 }] });
    const t0 = Date.now();
    const retry = await a.webhooks.finish(d2!.id, 'A', { status: 500, error: 'receiver answered 500', duration_ms: 1 }, POLICY);
    expect(retry?.state).toBe('pending');
    const due = Date.parse(retry!.next_attempt!);
    expect(due).toBeGreaterThanOrEqual(t0 + 500);
    expect(due).toBeLessThanOrEqual(Date.now() + 1_000);
    // Not due yet: nobody claims it.
    expect(await b.webhooks.claimDue('B', 10, 60_000)).toEqual([]);
    // Later, B does; then A's late report for that attempt changes nothing.
    const later = await b.webhooks.claimDue('B', 10, 60_000, due + 1);
    expect(later.map((d) => d.id)).toEqual([d2!.id]);
    expect(await a.webhooks.finish(d2!.id, 'A', { status: 200, duration_ms: 1 }, POLICY)).toBeUndefined();
    await b.webhooks.finish(d2!.id, 'B', { error: 'timeout', duration_ms: 1 }, POLICY);
    const third = await b.webhooks.claimDue('B', 10, 60_000, Date.now() + 60_000);
    const failed = await b.webhooks.finish(third[0]!.id, 'B', { error: 'timeout', duration_ms: 1 }, POLICY);
    expect(failed).toMatchObject({ state: 'failed', next_attempt: null });
    expect(failed!.attempts.map((x) => x.n)).toEqual([1, 2, 3]);
    expect(await a.webhooks.depth()).toBe(0);
    const log = await a.webhooks.deliveries(hook.id, 0, 10, 'desc');
    expect(log.total).toBe(2);
    expect(log.items.map((d) => d.state)).toEqual(['failed', 'delivered']);
  });

  it('an instance that dies holding a claim hands it over when the claim expires', async () => {
    const url = await ctx.freshUrl();
    const a = await ctx.open(url, { owner: 'A' });
    const b = await ctx.open(url, { owner: 'B' });
    await a.webhooks.create({ url: 'http://127.0.0.1:9/h' });
    await push(a);
    const now = Date.now();
    expect(await a.webhooks.claimDue('A', 10, 1_000, now)).toHaveLength(1);
    expect(await b.webhooks.claimDue('B', 10, 1_000, now + 500)).toHaveLength(0);
    const taken = await b.webhooks.claimDue('B', 10, 1_000, now + 1_001);
    expect(taken).toHaveLength(1);
    expect((await b.webhooks.finish(taken[0]!.id, 'B', { status: 200, duration_ms: 1 }, POLICY))?.state).toBe('delivered');
  });

  it('concurrent dispatchers on two instances claim each delivery exactly once', async () => {
    const url = await ctx.freshUrl();
    const a = await ctx.open(url, { owner: 'A' });
    const b = await ctx.open(url, { owner: 'B' });
    await a.webhooks.create({ url: 'http://127.0.0.1:9/h' });
    await parallel(60, 8, (i) => push(i % 2 ? a : b, 'web', 'site', String(i)));
    const seen = new Map<string, string>();
    const worker = async (c: Control, owner: string) => {
      for (let round = 0; round < 200; round++) {
        const got = await c.webhooks.claimDue(owner, 3, 60_000);
        if (got.length === 0) return;
        for (const d of got) {
          expect(seen.has(d.id)).toBe(false);
          seen.set(d.id, owner);
          await c.webhooks.finish(d.id, owner, { status: 200, duration_ms: 0 }, POLICY);
        }
      }
    };
    await Promise.all([worker(a, 'A'), worker(b, 'B'), worker(a, 'A2'), worker(b, 'B2')]);
    expect(seen.size).toBe(60);
    const states = await a.cdb.db.selectFrom('deliveries').select('state').execute();
    expect(states.every((s) => s.state === 'delivered')).toBe(true);
  });

  it('redelivery is a new delivery with the same event id and body', async () => {
    const c = await ctx.open();
    const w = await c.webhooks.create({ url: 'http://127.0.0.1:9/h' });
    await push(c);
    const [d] = await c.webhooks.claimDue(c.owner, 1, 60_000);
    await c.webhooks.finish(d!.id, c.owner, { status: 200, duration_ms: 1 }, POLICY);
    const again = await c.webhooks.redeliver(w.id, d!.id);
    expect(again).toMatchObject({ state: 'pending', event_id: d!.event_id, body: d!.body, attempts: [] });
    expect(again!.id).not.toBe(d!.id);
    expect(await c.webhooks.redeliver(w.id, 'dl-nope')).toBeUndefined();
    expect((await c.webhooks.claimDue(c.owner, 5, 60_000)).map((x) => x.id)).toEqual([again!.id]);
  });

  it('backoff doubles, is capped, and jitters between 50 and 100 %', () => {
    expect(backoffMs(POLICY, 1, 1)).toBe(1_000);
    expect(backoffMs(POLICY, 2, 1)).toBe(2_000);
    expect(backoffMs(POLICY, 3, 0)).toBe(2_000);
    expect(backoffMs(POLICY, 10, 1)).toBe(10_000);
  });
});
