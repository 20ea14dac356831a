// Deploy records on both dialects (seed 003, DESIGN 14): one active deploy per node as a
// database constraint (a concurrent race from two connections), Idempotency-Key, the status
// machine with its history and deploy.* events, bounded logs, bad versions per target, the
// signed callback queued in the webhook outbox, and the deadline sweep.
import { isKkError } from '@kk/core';
import { expect, it } from 'vitest';
import type { Control } from '../src/index.js';
import { DEPLOY_LOG_MAX } from '../src/index.js';
import { describeDialects } from './dialects.js';

async function enrolled(c: Control, name: string) {
  const reg = await c.fleet.createRegistrationToken({ by: 'admin' });
  return (await c.fleet.enrol({ registrationToken: reg.token, name })).node;
}

const kkSpec = (version: string) => ({ project: 'p', app: 'web', version, path: '/srv/web' });
const SECRET = 'callback-secret';

async function caught(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

describeDialects('deploys', (ctx) => {
  it('two creates for one node at once from two connections: exactly one wins, the loser is LOCKED naming the active id', async () => {
    const url = await ctx.freshUrl();
    const a = await ctx.open(url);
    const b = await ctx.open(url);
    const node = await enrolled(a, 'web-1');
    for (let round = 0; round < 8; round++) {
      const results = await Promise.allSettled([
        a.deploys.create({ node: node.id, deploy_type: 'shell', spec: { script: `echo a${round}` }, by: 'tok-a' }),
        b.deploys.create({ node: node.id, deploy_type: 'shell', spec: { script: `echo b${round}` }, by: 'tok-b' }),
      ]);
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r) => r.status === 'rejected');
      expect(won, `round ${round}`).toHaveLength(1);
      expect(lost).toHaveLength(1);
      const winner = (won[0] as PromiseFulfilledResult<{ deploy: { id: string } }>).value.deploy.id;
      const err = (lost[0] as PromiseRejectedResult).reason;
      expect(isKkError(err, 'LOCKED')).toBe(true);
      expect(err.details).toEqual({ active: winner });
      expect(err.message).toContain(winner);
      const active = await a.deploys.active(node.id);
      expect(active?.id).toBe(winner);
      await a.deploys.complete(winner, node.id, { callback_id: winner, command_type: 'deploy.shell', deploy_type: 'shell', status: 'success', success: true, result: {}, error: '', duration: 1, timestamp: new Date().toISOString() });
    }
    const rows = await a.cdb.db.selectFrom('deploys' as never).select(['id' as never]).execute();
    expect(rows).toHaveLength(8);
  });

  it('Idempotency-Key: the same request returns the same deploy; another request with that key is refused', async () => {
    const c = await ctx.open();
    const node = await enrolled(c, 'web-1');
    const one = await c.deploys.create({ node: 'web-1', deploy_type: 'kk', spec: kkSpec('v1'), by: 'tok', idempotency_key: 'k1' });
    expect(one.created).toBe(true);
    expect(one.deploy).toMatchObject({ node: node.id, status: 'pending', active: true, progress: 0, command_type: 'deploy.kk', version: 'v1', target: 'kk:/srv/web' });
    const again = await c.deploys.create({ node: 'web-1', deploy_type: 'kk', spec: kkSpec('v1'), by: 'tok', idempotency_key: 'k1' });
    expect(again).toEqual({ deploy: one.deploy, created: false });
    const other = await caught(c.deploys.create({ node: 'web-1', deploy_type: 'kk', spec: kkSpec('v2'), by: 'tok', idempotency_key: 'k1' }));
    expect(isKkError(other, 'CONFIG_INVALID')).toBe(true);
    const busy = await caught(c.deploys.create({ node: 'web-1', deploy_type: 'kk', spec: kkSpec('v2'), by: 'tok', idempotency_key: 'k2' }));
    expect(isKkError(busy, 'LOCKED')).toBe(true);
    expect((busy as { details: unknown }).details).toEqual({ active: one.deploy.id });
    expect(isKkError(await caught(c.deploys.create({ node: 'nope', deploy_type: 'shell', spec: {}, by: 'tok' })), 'NOT_FOUND')).toBe(true);
  });

  it('a kk deploy whose health check fails: history, deploy.* events, v2 marked bad for the target, the callback queued signed with the seed fields', async () => {
    const c = await ctx.open(undefined, { webhookSecret: SECRET });
    const node = await enrolled(c, 'web-1');
    const { deploy: d } = await c.deploys.create({ node: node.id, deploy_type: 'kk', spec: kkSpec('v2'), by: 'tok', callback_url: 'http://127.0.0.1:9/cb' });
    const steps = [
      ['executing', 5],
      ['script_running', 80],
      ['health_check', 90],
      ['failed', 90],
      ['rolling_back', 90],
      ['health_check', 90],
    ] as const;
    for (const [status, progress] of steps) expect(await c.deploys.report(d.id, node.id, { status, progress, message: status, logs: [`at ${status}`] })).toBe(true);
    // Another node may not report on it.
    const other = await enrolled(c, 'web-2');
    expect(isKkError(await caught(c.deploys.report(d.id, other.id, { status: 'success', progress: 100 })), 'FORBIDDEN')).toBe(true);
    // A report of a final status (the agent reports before it calls back) does not end the deploy
    // and is no error (it was a CHECK-constraint 500): only the callback ends it.
    expect(await c.deploys.report(d.id, node.id, { status: 'rolled_back', progress: 100 })).toBe(false);
    expect((await c.deploys.get(d.id))?.active).toBe(true);
    const payload = {
      callback_id: d.id,
      command_type: 'deploy.kk',
      deploy_type: 'kk' as const,
      status: 'rolled_back' as const,
      success: false,
      result: { bad_version: 'v2', rollback: { success: true, to: 'v1' }, error_code: 'BACKEND' },
      error: 'health check failed: HTTP 500',
      duration: 1234,
      timestamp: new Date().toISOString(),
    };
    expect(await c.deploys.complete(d.id, node.id, payload)).toBe(true);
    expect(await c.deploys.complete(d.id, node.id, payload)).toBe(false);
    expect(await c.deploys.report(d.id, node.id, { status: 'executing', progress: 5 })).toBe(false);
    const rec = await c.deploys.get(d.id);
    expect(rec).toMatchObject({ status: 'rolled_back', active: false, progress: 100, error: 'health check failed: HTTP 500', error_code: 'BACKEND', result: payload.result });
    expect(rec?.finished).toBeDefined();
    const hist = (await c.deploys.history(d.id)).map((h) => h.status);
    expect(hist).toEqual(['pending', 'executing', 'script_running', 'health_check', 'failed', 'rolling_back', 'health_check', 'rolled_back']);
    expect((await c.deploys.logs(d.id)).map((l) => l.line)).toEqual(steps.map(([s]) => `at ${s}`));
    const events = (await c.events.since(0, 1000)).items.filter((e) => e.type.startsWith('deploy.'));
    expect(events.map((e) => e.type)).toEqual(['deploy.pending', ...steps.map(([s]) => `deploy.${s}`), 'deploy.rolled_back']);
    expect(events[0]!.details).toMatchObject({ deploy: d.id, node: node.id, deploy_type: 'kk' });
    // Bad for this node's target only; refused again unless forced.
    expect(await c.deploys.isBad(node.id, 'kk:/srv/web', 'v2')).toBe(true);
    expect(await c.deploys.isBad(other.id, 'kk:/srv/web', 'v2')).toBe(false);
    const refused = await caught(c.deploys.create({ node: node.id, deploy_type: 'kk', spec: kkSpec('v2'), by: 'tok' }));
    expect(isKkError(refused, 'CONFIG_INVALID')).toBe(true);
    expect((refused as Error).message).toContain('marked bad');
    const forced = await c.deploys.create({ node: node.id, deploy_type: 'kk', spec: kkSpec('v2'), by: 'tok', force: true });
    expect(forced.created).toBe(true);
    // The callback sits in the outbox; the dispatcher signs the stored body with the hook's secret (x-kk-signature-256).
    const due = await c.webhooks.claimDue('test', 10, 60_000);
    expect(due).toHaveLength(1);
    const body = JSON.parse(due[0]!.body);
    expect(Object.keys(body).sort()).toEqual(['callback_id', 'command_type', 'deploy_type', 'duration', 'error', 'result', 'status', 'success', 'timestamp']);
    expect(body).toMatchObject({ callback_id: d.id, status: 'rolled_back', success: false, deploy_type: 'kk', command_type: 'deploy.kk' });
    const hook = await c.webhooks.get(due[0]!.webhook);
    // The callback's hook is kk's own: not in the webhook listing.
    expect((await c.webhooks.list()).map((w) => w.id)).not.toContain(due[0]!.webhook);
    expect((await c.webhooks.list(undefined, { hidden: true })).map((w) => w.id)).toContain(due[0]!.webhook);
    expect(hook).toMatchObject({ url: 'http://127.0.0.1:9/cb', secret: SECRET, events: [] });
  });

  it('logs are bounded per deploy (the newest kept); a silent node past the deadline gets timeout; lists are cursor paged', async () => {
    const c = await ctx.open();
    const node = await enrolled(c, 'web-1');
    const { deploy: d } = await c.deploys.create({ node: node.id, deploy_type: 'shell', spec: { script: 'true' }, by: 'tok', deadline_ms: 1 });
    const lines = Array.from({ length: DEPLOY_LOG_MAX + 200 }, (_, i) => `line ${i}`);
    await c.deploys.report(d.id, node.id, { status: 'executing', progress: 5, logs: lines.slice(0, 600) });
    await c.deploys.report(d.id, node.id, { status: 'script_running', progress: 30, logs: lines.slice(600) });
    const kept = (await c.deploys.logs(d.id)).map((l) => l.line);
    expect(kept).toHaveLength(DEPLOY_LOG_MAX);
    expect(kept[0]).toBe('line 200');
    expect(kept.at(-1)).toBe(`line ${DEPLOY_LOG_MAX + 199}`);
    await new Promise((r) => setTimeout(r, 5));
    expect(await c.deploys.sweep()).toEqual([d.id]);
    expect(await c.deploys.get(d.id)).toMatchObject({ status: 'timeout', active: false, error_code: 'TIMEOUT' });
    expect(await c.deploys.sweep()).toEqual([]);
    const ids = [d.id];
    for (let i = 0; i < 4; i++) {
      const x = (await c.deploys.create({ node: node.id, deploy_type: 'shell', spec: { script: `echo ${i}` }, by: 'tok' })).deploy;
      ids.push(x.id);
      await c.deploys.complete(x.id, node.id, { callback_id: x.id, command_type: 'deploy.shell', deploy_type: 'shell', status: 'failed', success: false, result: {}, error: 'exit 1', duration: 1, timestamp: new Date().toISOString() });
    }
    const p1 = await c.deploys.list(node.id, { limit: 3 });
    expect(p1.items.map((x) => x.id)).toEqual(ids.slice().reverse().slice(0, 3));
    const p2 = await c.deploys.list(node.id, { limit: 3, cursor: p1.next_cursor! });
    expect(p2.items.map((x) => x.id)).toEqual(ids.slice().reverse().slice(3));
    expect(p2.next_cursor).toBeUndefined();
  });
  it('claims fence reports by attempt; a lost claim is claimable again after the lease; manual rollback; the docker monitor keeps the last report per container', async () => {
    const c = await ctx.open();
    const node = await enrolled(c, 'web-1');
    expect(await c.deploys.claim(node.id)).toBeUndefined();
    const { deploy } = await c.deploys.create({ node: node.id, deploy_type: 'kk', spec: kkSpec('v1'), by: 'tok' });
    const first = await c.deploys.claim(node.id);
    expect(first?.deploy.id).toBe(deploy.id);
    // Claimed and nothing reported yet: not handed out twice within the lease.
    expect(await c.deploys.claim(node.id)).toBeUndefined();
    // The lease lapsed (a lease of -1 ms: any earlier claim has lapsed).
    const second = await c.deploys.claim(node.id, -1);
    expect(second?.deploy.id).toBe(deploy.id);
    expect(second!.attempt_id).not.toBe(first!.attempt_id);
    // The first attempt no longer holds it.
    const stale = await caught(c.deploys.report(deploy.id, node.id, { status: 'executing', progress: 5 }, first!.attempt_id));
    expect(isKkError(stale, 'LOCKED')).toBe(true);
    expect(await c.deploys.report(deploy.id, node.id, { status: 'executing', progress: 5 }, second!.attempt_id)).toBe(true);
    // Started: never claimed again.
    expect(await c.deploys.claim(node.id, -1)).toBeUndefined();
    const cb = { callback_id: deploy.id, command_type: 'deploy.kk', deploy_type: 'kk' as const, status: 'success' as const, success: true, result: { version: 'v1' }, error: '', duration: 1, timestamp: new Date().toISOString() };
    expect(isKkError(await caught(c.deploys.complete(deploy.id, node.id, cb, first!.attempt_id)), 'LOCKED')).toBe(true);
    expect(await c.deploys.complete(deploy.id, node.id, cb, second!.attempt_id)).toBe(true);
    expect((await c.deploys.get(deploy.id))?.status).toBe('success');

    // A manual rollback: a deploy.rollback deploy of the same spec; the version it takes away is marked bad.
    const rb = await c.deploys.rollback(deploy.id, { by: 'tok' });
    expect(rb.deploy).toMatchObject({ command_type: 'deploy.rollback', rollback_of: deploy.id, status: 'pending', target: 'kk:/srv/web' });
    expect(isKkError(await caught(c.deploys.rollback(deploy.id, { by: 'tok' })), 'LOCKED')).toBe(true);
    const rc = await c.deploys.claim(node.id);
    await c.deploys.report(rb.deploy.id, node.id, { status: 'rolling_back', progress: 0 }, rc!.attempt_id);
    await c.deploys.complete(rb.deploy.id, node.id, { ...cb, callback_id: rb.deploy.id, command_type: 'deploy.rollback', status: 'rolled_back', result: { bad_version: 'v1' } }, rc!.attempt_id);
    expect((await c.deploys.get(rb.deploy.id))?.status).toBe('rolled_back');
    expect(await c.deploys.isBad(node.id, 'kk:/srv/web', 'v1')).toBe(true);
    expect(isKkError(await caught(c.deploys.rollback(rb.deploy.id, { by: 'tok' })), 'NOTHING_TO_ROLLBACK')).toBe(true);

    expect(await c.deploys.recordMonitor(node.id, [{ name: 'web', state: 'running' }, { name: 'db', state: 'exited' }])).toBe(2);
    expect(await c.deploys.recordMonitor(node.id, [{ name: 'web', state: 'paused' }])).toBe(1);
    const mon = await c.deploys.monitor(node.id);
    expect(mon).toMatchObject([{ name: 'web', report: { name: 'web', state: 'paused' } }]);
  });
});
