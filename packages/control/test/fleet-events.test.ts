// The fleet's and the deploys' event types are webhook types (util.ts EVENT_TYPES): a webhook may
// subscribe to them, and the fleet's state changes append them with a delivery per subscriber,
// also when the event names no app (a node going OFFLINE, a deploy); a project filter still holds.
import { DEPLOY_EVENT_TYPES } from '@kk/core';
import { expect, it } from 'vitest';
import { EVENT_TYPES } from '../src/index.js';
import { describeDialects } from './dialects.js';

describeDialects('fleet events as webhook types', (ctx) => {
  it('fleet and deploy.* types are subscribable and get deliveries; unknown types are still refused', async () => {
    expect(EVENT_TYPES).toEqual(expect.arrayContaining(['task.failed', 'sync.degraded', 'sync.recovered', 'sync.target_recovered', 'target.paused', 'target.resumed', 'sync.conflict', 'sync.verified', 'sync.paused_pull', 'node.offline', ...DEPLOY_EVENT_TYPES]));
    const clock = { t: Date.parse('2026-06-01T00:00:00Z') };
    const c = await ctx.open(undefined, { fleet: { now: () => clock.t, random: () => 0.5 } });
    const all = await c.webhooks.create({ name: 'ops', url: 'http://127.0.0.1:9/ops', events: ['task.failed', 'target.paused', 'target.resumed', 'node.offline', 'deploy.failed', 'sync.degraded'], active: true });
    const shopOnly = await c.webhooks.create({ name: 'shop', url: 'http://127.0.0.1:9/shop', events: ['target.paused', 'node.offline'], project: 'shop', active: true });
    await expect(c.webhooks.create({ name: 'x', url: 'http://127.0.0.1:9/x', events: ['task.bogus'], active: true })).rejects.toThrow(/unknown event "task.bogus"/);

    const reg = await c.fleet.createRegistrationToken({ by: 'admin' });
    const { node } = await c.fleet.enrol({ registrationToken: reg.token, name: 'n1' });
    const target = await c.fleet.addTarget({ project: 'shop', app: 'web', node: node.id, path: '/srv/shop', by: 'admin' });
    await c.fleet.setProject('shop', { retry: { max_attempts: 1 }, degraded_after: 1 }, 'admin');
    await c.fleet.pause(target.id, { reason: 'upgrade', by: 'admin' });
    await c.fleet.resume(target.id, 'admin');
    await c.fleet.enqueue(target.id, { version: 'v1', source: 'manual', by: 'admin' });
    const claim = (await c.fleet.claim(node.id))!;
    await c.fleet.report(node.id, claim.task.id, claim.attempt_id, { outcome: { ok: false, code: 'DISK_FULL', reason: 'no space left on /srv' } });
    clock.t += 60_000;
    await c.fleet.sweep(); // node silent: OFFLINE, an event without project or app
    await c.events.emit({ type: 'deploy.failed', actor: { token: 'node:x' }, details: { deploy: 'dp-1', message: 'health check failed' } });

    const got = async (id: string) => (await c.webhooks.deliveries(id, 0, 100, 'asc')).items.map((d) => d.event);
    expect(await got(all.id)).toEqual(['target.paused', 'target.resumed', 'task.failed', 'sync.degraded', 'node.offline', 'deploy.failed']);
    expect(await got(shopOnly.id)).toEqual(['target.paused']);
    const failed = (await c.webhooks.deliveries(all.id, 0, 100, 'asc')).items.find((d) => d.event === 'task.failed')!;
    expect(JSON.parse(failed.body)).toMatchObject({ type: 'task.failed', project: 'shop', app: 'web', version: 'v1', details: { code: 'DISK_FULL', reason: 'no space left on /srv', target: target.id } });
  });

  it('a resume queues a sync then a verify; a verify not done within 2 min is a CONFLICT: alarm, target paused again', async () => {
    const clock = { t: Date.parse('2026-06-01T00:00:00Z') };
    const c = await ctx.open(undefined, { fleet: { now: () => clock.t, random: () => 0.5 } });
    const reg = await c.fleet.createRegistrationToken({ by: 'admin' });
    const { node } = await c.fleet.enrol({ registrationToken: reg.token, name: 'n1' });
    const target = await c.fleet.addTarget({ project: 'shop', app: 'web', node: node.id, path: '/srv/shop', by: 'admin' });
    await c.fleet.pause(target.id, { reason: 'upgrade', by: 'admin' });
    await c.fleet.enqueue(target.id, { version: 'v2', source: 'promote', by: 'admin' });
    expect(await c.fleet.claim(node.id)).toBeUndefined();
    await c.fleet.resume(target.id, 'admin');
    // The resume takes over the queued task for its version: that sync is the resume's.
    expect((await c.fleet.enqueue(target.id, { version: 'v2', source: 'resume', by: 'admin' })).source).toBe('resume');
    const sync = (await c.fleet.claim(node.id))!;
    await c.fleet.report(node.id, sync.task.id, sync.attempt_id, { outcome: { ok: true, result: {} } });
    const verify = (await c.fleet.claim(node.id))!;
    expect(verify.task).toMatchObject({ source: 'verify', version: 'v2' });
    clock.t += 119_000;
    await c.fleet.heartbeat(node.id, { task: { id: verify.task.id, attempt_id: verify.attempt_id } });
    await c.fleet.sweep();
    expect((await c.fleet.targetStatus(target.id)).verify).toMatchObject({ state: 'RUNNING' });
    clock.t += 2_000;
    await c.fleet.heartbeat(node.id, { task: { id: verify.task.id, attempt_id: verify.attempt_id } });
    await c.fleet.sweep();
    const st = await c.fleet.targetStatus(target.id);
    expect(st).toMatchObject({ state: 'paused', verify: { state: 'CONFLICT', error: { code: 'VERIFY_TIMEOUT' } }, target: { paused: { by: 'system', reason: expect.stringMatching(/^CONFLICT: verify of v2 .*did not finish within 120 s/) } } });
    const alarm = (await c.events.since(0, 1000, { type: 'sync.conflict' })).items;
    expect(alarm.map((e) => e.details?.code)).toEqual(['VERIFY_TIMEOUT']);
    // The late report of that attempt is refused; nothing is claimed while paused.
    await expect(c.fleet.report(node.id, verify.task.id, verify.attempt_id, { outcome: { ok: true, result: {} } })).rejects.toThrow(/no longer current/);
    expect(await c.fleet.claim(node.id)).toBeUndefined();
  });
});
