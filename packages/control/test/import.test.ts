// The one-time import of a store's `server/` state, with objects laid out exactly as the
// store-backed server (kk 0.1) wrote them.
import { createHash, randomBytes } from 'node:crypto';
import { createMemoryDriver } from '@kk/core';
import { expect, it } from 'vitest';
import { importStoreState } from '../src/index.js';
import { describeDialects } from './dialects.js';

const json = (o: unknown) => Buffer.from(JSON.stringify(o));

async function oldStore() {
  const d = createMemoryDriver();
  const id = randomBytes(10).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  const token = `kk_${id}_${secret}`;
  const created = '2026-11-30T10:00:00.000Z';
  await d.put(`server/tokens/${id}`, json({ id, name: 'ci', hash: `sha256:${createHash('sha256').update(secret).digest('hex')}`, scope: 'project:web', permissions: ['pull', 'push'], created, expires: null, revoked: null, created_by: 'admin' }));
  const rid = randomBytes(10).toString('hex');
  await d.put(`server/tokens/${rid}`, json({ id: rid, name: 'old', hash: 'sha256:' + '0'.repeat(64), scope: 'global', permissions: ['admin'], created, expires: null, revoked: '2026-11-30T11:00:00.000Z', created_by: 'admin' }));
  const hook = { id: 'wh-0123456789abcdef', name: 'deploys', url: 'http://127.0.0.1:9/h', events: ['push'], secret: 'webhook-secret-1', project: 'web', active: true, source: 'api', created, updated: created };
  await d.put(`server/webhooks/${hook.id}`, json(hook));
  const body = JSON.stringify({ id: 'evt-1', time: created, type: 'push', project: 'web', app: 'site', version: '1', actor: { token: id } });
  const pending = { id: 'dl-00000000a-11111111', webhook: hook.id, event_id: 'evt-1', event: 'push', body, state: 'pending', attempts: [{ n: 1, at: created, error: 'receiver answered 503', status: 503, duration_ms: 4 }], created, updated: created, next_attempt: '2026-11-30T10:01:00.000Z' };
  const delivered = { ...pending, id: 'dl-00000000b-22222222', state: 'delivered', attempts: [{ n: 1, at: created, status: 200, duration_ms: 2 }], next_attempt: null };
  await d.put(`server/deliveries/${hook.id}/${pending.id}`, json(pending));
  await d.put(`server/deliveries/${hook.id}/${delivered.id}`, json(delivered));
  await d.put(`server/outbox/${String(Date.parse(pending.next_attempt)).padStart(13, '0')}-${pending.id}`, json({ delivery: pending.id, webhook: hook.id, attempt: 1 }));
  for (let i = 0; i < 3; i++) {
    const ms = Date.parse(created) + i * 1000;
    const aid = `${String(ms).padStart(13, '0')}-${String(i).padStart(6, '0')}-abcdef0${i}`;
    await d.put(`server/audit/2026-11-30/${aid}`, json({ action: i ? 'pull' : 'push', project: 'web', app: 'site', version: '1', token: id, agent: 'ci-1', id: aid, time: new Date(ms).toISOString() }));
  }
  const up = { id: `up-${'c'.repeat(24)}`, project: 'web', app: 'site', version: '2', token: id, created, expires: new Date(Date.now() + 3_600_000).toISOString(), declared: [] };
  await d.put(`server/uploads/web/site/2/session`, json(up));
  await d.put(`server/uploads/web/site/2/files/${createHash('sha256').update('a.txt').digest('hex')}`, json({ path: 'a.txt', size: 1 }));
  await d.put('server/upload-ids/' + up.id, json({ project: 'web', app: 'site', version: '2' }));
  await d.put('server/retention/last-run', json({ started: created, deleted: [] }));
  await d.put('server/bootstrap', json({ created }));
  return { d, token, hook, pending, delivered, up };
}

describeDialects('importing a store-backed server state', (ctx) => {
  it('carries tokens, webhooks, pending deliveries, audit and uploads over, once', async () => {
    const { d, token, hook, pending, up } = await oldStore();
    const url = await ctx.freshUrl();
    const c = await ctx.open(url);
    const r = await importStoreState(c.cdb, d);
    expect(r).toEqual({ imported: true, tokens: 2, webhooks: 1, deliveries: 2, pending: 1, audit: 3, uploads: 1 });
    // Tokens keep working (and a revoked one stays revoked).
    expect((await c.tokens.authenticate(`Bearer ${token}`)).scope).toEqual({ kind: 'project', project: 'web' });
    expect((await c.tokens.list()).filter((t) => t.revoked)).toHaveLength(1);
    expect(await c.webhooks.get(hook.id)).toEqual(hook);
    // The pending delivery is due at its outbox time and is sent by the next claim.
    const due = await c.webhooks.claimDue(c.owner, 10, 60_000);
    expect(due.map((x) => x.id)).toEqual([pending.id]);
    expect(due[0]).toMatchObject({ body: pending.body, attempts: pending.attempts });
    const audit = await c.audit.query({ project: 'web' }, { limit: 10, offset: 0, order: 'asc' });
    expect(audit.items.map((e) => e.action)).toEqual(['push', 'pull', 'pull']);
    expect(audit.items[0]).toMatchObject({ token: token.split('_')[1], agent: 'ci-1' });
    expect((await c.uploads.byId(up.id))?.version).toBe('2');
    expect((await c.uploads.files(up)).map((f) => f.path)).toEqual(['a.txt']);
    expect(await c.settings.get('bootstrap')).toEqual({ created: '2026-11-30T10:00:00.000Z' });
    // A second start (another instance, or a restart) imports nothing, even if the store changed.
    await d.put('server/tokens/ffffffffffffffffffff', json({ id: 'ffffffffffffffffffff', hash: 'sha256:00', scope: 'global', permissions: ['admin'] }));
    const c2 = await ctx.open(url);
    expect(await importStoreState(c2.cdb, d)).toMatchObject({ imported: false, tokens: 0 });
    expect(await c2.tokens.list()).toHaveLength(2);
  });

  it('two instances importing at once import once', async () => {
    const { d } = await oldStore();
    const url = await ctx.freshUrl();
    const [a, b] = await Promise.all([ctx.open(url), ctx.open(url)]);
    const rs = await Promise.all([importStoreState(a.cdb, d), importStoreState(b.cdb, d)]);
    expect(rs.map((r) => r.imported).sort()).toEqual([false, true]);
    expect(await a.tokens.list()).toHaveLength(2);
    expect((await a.audit.query({}, { limit: 10, offset: 0, order: 'asc' })).total).toBe(3);
  });

  it('an empty store imports nothing and marks it done', async () => {
    const c = await ctx.open();
    expect(await importStoreState(c.cdb, createMemoryDriver())).toEqual({ imported: true, tokens: 0, webhooks: 0, deliveries: 0, pending: 0, audit: 0, uploads: 0 });
    expect((await importStoreState(c.cdb, createMemoryDriver())).imported).toBe(false);
  });
});
