// The fleet's rules on both dialects: enrolment and node tokens, liveness, targets, task
// creation (latest wins), claims (pause, drain, slots, backoff), reports with fencing, lease
// expiry, retries, SYNC_DEGRADED and recovery, cancel/retry, the sweep, paging.
import { isKkError } from '@kk/core';
import { sql } from 'kysely';
import { expect, it } from 'vitest';
import type { Control } from '../src/index.js';
import { type DialectContext, describeDialects } from './dialects.js';

async function errorOf(p: Promise<unknown>): Promise<Error & { code?: string; details?: Record<string, unknown> }> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

/** A Control whose fleet runs on a clock the test moves. */
async function fleetWithClock(ctx: DialectContext, url?: string) {
  const clock = { t: Date.parse('2026-06-01T00:00:00Z') };
  const c = await ctx.open(url, { fleet: { now: () => clock.t, random: () => 0.5 } });
  return { c, f: c.fleet, clock };
}

async function enrolled(c: Control, name: string, tags?: Record<string, string>) {
  const reg = await c.fleet.createRegistrationToken({ by: 'admin' });
  return c.fleet.enrol({ registrationToken: reg.token, name, tags });
}

async function eventsOf(c: Control, prefix: string) {
  return (await c.events.since(0, 10_000)).items.filter((e) => e.type.startsWith(prefix));
}

describeDialects('fleet', (ctx) => {
  it('enrols with a registration token: node token shown once, stored hashed, scoped to its node', async () => {
    const { c, f, clock } = await fleetWithClock(ctx);
    const reg = await f.createRegistrationToken({ by: 'admin', expiresInMs: 60_000, tags: { region: 'eu' } });
    expect(reg.token).toMatch(/^kkr_[0-9a-f]{20}_/);
    const { node, token } = await f.enrol({ registrationToken: reg.token, name: 'web-1', tags: { role: 'web' } });
    expect(node).toMatchObject({ name: 'web-1', kind: 'agent', status: 'ONLINE', tags: { region: 'eu', role: 'web' }, schedulable: true });
    expect(await f.authenticateNode(token)).toBe(node.id);
    expect(await f.authenticateNode(token, node.id)).toBe(node.id);
    // Only hashes in the database.
    const stored = await sql<{ hash: string }>`select hash from node_tokens union all select hash from registration_tokens`.execute(c.cdb.db);
    for (const r of stored.rows) {
      expect(r.hash).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(token).not.toContain(r.hash.slice(7));
    }
    const other = await f.enrol({ registrationToken: reg.token, name: 'web-2' });
    expect((await errorOf(f.authenticateNode(token, other.node.id))).code).toBe('FORBIDDEN');
    expect((await errorOf(f.authenticateNode(token.slice(0, -2) + 'xx'))).code).toBe('AUTH');
    // A taken name is refused and names the way out.
    const dup = await errorOf(f.enrol({ registrationToken: reg.token, name: 'web-1' }));
    expect(dup.code).toBe('CONFIG_INVALID');
    expect(dup.message).toMatch(/already exists/);
    // Wrong, expired and revoked registration tokens: AUTH.
    expect((await errorOf(f.enrol({ registrationToken: 'kkr_nope', name: 'x1' }))).code).toBe('AUTH');
    expect((await errorOf(f.enrol({ registrationToken: reg.token.slice(0, -1) + (reg.token.endsWith('A') ? 'B' : 'A'), name: 'x2' }))).code).toBe('AUTH');
    clock.t += 61_000;
    expect((await errorOf(f.enrol({ registrationToken: reg.token, name: 'x3' }))).code).toBe('AUTH');
    const reg2 = await f.createRegistrationToken({ by: 'admin' });
    await f.revokeRegistrationToken(reg2.id, 'admin');
    expect((await errorOf(f.enrol({ registrationToken: reg2.token, name: 'x4' }))).code).toBe('AUTH');
    // Rotating a node token: the old one stops at once.
    const fresh = await f.rotateNodeToken(node.id);
    expect((await errorOf(f.authenticateNode(token))).code).toBe('AUTH');
    expect(await f.authenticateNode(fresh, node.id)).toBe(node.id);
    expect((await f.listRegistrationTokens()).map((t) => t.uses).sort()).toEqual([0, 2]);
  });

  it('heartbeats keep a node ONLINE; 50 s of silence makes it OFFLINE with the reason, in its history', async () => {
    const { c, f, clock } = await fleetWithClock(ctx);
    const { node } = await enrolled(c, 'n1');
    const hb = await f.heartbeat(node.id, { info: { version: '0.1.0' } });
    expect(hb.interval_ms).toBe(10_000);
    clock.t += 49_000;
    expect((await f.sweep()).offline).toBe(0);
    clock.t += 2_000;
    expect((await f.sweep()).offline).toBe(1);
    const off = await f.node('n1');
    expect(off.status).toBe('OFFLINE');
    expect(off.status_reason).toMatch(/no heartbeat for 51 s/);
    await f.heartbeat(node.id, { degraded: 'disk 97% full' });
    expect(await f.node(node.id)).toMatchObject({ status: 'DEGRADED', status_reason: 'disk 97% full' });
    await f.heartbeat(node.id);
    expect((await f.node(node.id)).status).toBe('ONLINE');
    const hist = await f.statusHistory('n1');
    expect(hist.map((h) => h.to)).toEqual(['ONLINE', 'DEGRADED', 'OFFLINE', 'ONLINE']);
    expect((await eventsOf(c, 'node.')).map((e) => e.type)).toEqual(['node.enrolled', 'node.offline', 'node.degraded', 'node.online']);
  });

  it('nodes: batch import is all or none, tag filter, drain, removal guarded by targets', async () => {
    const { f } = await fleetWithClock(ctx);
    const made = await f.createNodes(
      [
        { name: 'a', kind: 'ssh', address: 'deploy@10.0.0.1', tags: { dc: 'x' } },
        { name: 'b', kind: 'ssh', address: 'deploy@10.0.0.2', tags: { dc: 'y' } },
      ],
      'admin',
    );
    expect(made.map((n) => n.status)).toEqual(['OFFLINE', 'OFFLINE']);
    expect((await errorOf(f.createNodes([{ name: 'c', kind: 'ssh', address: 'h' }, { name: 'a', kind: 'ssh', address: 'h' }], 'admin'))).message).toMatch(/already taken: a/);
    expect((await f.nodes()).map((n) => n.name)).toEqual(['a', 'b']);
    expect((await f.nodes({ tags: { dc: 'y' } })).map((n) => n.name)).toEqual(['b']);
    expect((await errorOf(f.createNodes([{ name: 'bad name', kind: 'ssh', address: 'h' }], 'admin'))).code).toBe('INVALID_NAME');
    const d = await f.updateNode('a', { schedulable: false, drain_reason: 'kernel upgrade' }, 'admin');
    expect(d).toMatchObject({ schedulable: false, drain_reason: 'kernel upgrade' });
    await f.addTarget({ project: 'p', app: 'web', node: 'a', path: '/srv/web', by: 'admin' });
    expect((await errorOf(f.removeNode('a', { by: 'admin' }))).message).toMatch(/used by 1 target/);
    await f.removeNode('a', { by: 'admin', force: true });
    expect(await f.targets()).toEqual([]);
    expect((await errorOf(f.node('a'))).code).toBe('NOT_FOUND');
  });

  it('targets: one directory per node, absolute normalized paths, pinned needs a version', async () => {
    const { c, f } = await fleetWithClock(ctx);
    const { node } = await enrolled(c, 'n1');
    const t = await f.addTarget({ project: 'p', app: 'web', node: 'n1', path: '/srv/web', include: ['dist/**'], exclude: ['*.log'], by: 'admin' });
    expect(t).toMatchObject({ node: node.id, strategy: 'mirror', follows: 'promoted', include: ['dist/**'], exclude: ['*.log'], paused: null });
    const clash = await errorOf(f.addTarget({ project: 'q', app: 'api', node: node.id, path: '/srv/web', by: 'admin' }));
    expect(clash.message).toMatch(/already belongs to target/);
    for (const bad of ['srv/web', '/srv/../etc', '/', '/srv/web/', '/srv//web']) {
      expect((await errorOf(f.addTarget({ project: 'p', app: 'web', node: 'n1', path: bad, by: 'admin' }))).code).toBe('UNSAFE_PATH');
    }
    expect((await errorOf(f.addTarget({ project: 'p', app: 'web', node: 'n1', path: '/srv/x', follows: 'pinned', by: 'admin' }))).code).toBe('CONFIG_INVALID');
    const pinned = await f.addTarget({ project: 'p', app: 'web', node: 'n1', path: '/srv/pinned', pinned: 'v1', by: 'admin' });
    expect(pinned).toMatchObject({ follows: 'pinned', pinned: 'v1' });
    expect((await f.project('p')).max_parallel_nodes).toBe(5);
  });

  it('targets: a sync mode column (migration 5), full by default, skip-existing kept and carried by the claim', async () => {
    const { c, f } = await fleetWithClock(ctx);
    const { node } = await enrolled(c, 'n1');
    const full = await f.addTarget({ project: 'p', app: 'web', node: 'n1', path: '/srv/full', by: 'admin' });
    expect(full.mode).toBe('full');
    const skip = await f.addTarget({ project: 'p', app: 'api', node: 'n1', path: '/srv/skip', mode: 'skip-existing', by: 'admin' });
    expect((await f.target(skip.id)).mode).toBe('skip-existing');
    const bad = await errorOf(f.addTarget({ project: 'p', app: 'api', node: 'n1', path: '/srv/x', mode: 'events' as never, by: 'admin' }));
    expect(bad).toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/mode must be full or skip-existing, not "events"/) });
    // The column itself: a row inserted without it is full; the database refuses another value.
    const rows = await sql<{ id: string; mode: string }>`select id, mode from targets order by id`.execute(c.cdb.db);
    expect(rows.rows).toEqual([{ id: full.id, mode: 'full' }, { id: skip.id, mode: 'skip-existing' }]);
    expect(await sql`update targets set mode = 'events' where id = ${skip.id}`.execute(c.cdb.db).then(() => 'ok', () => 'refused')).toBe('refused');
    const schema = await sql<{ version: number | string; name: string }>`select version, name from kk_schema where version = 5`.execute(c.cdb.db);
    expect(schema.rows.map((r) => [Number(r.version), r.name])).toEqual([[5, 'fleet: target sync mode']]);
    // updateTarget changes it and keeps it when not given.
    expect((await f.updateTarget(full.id, { mode: 'skip-existing' }, 'admin')).mode).toBe('skip-existing');
    expect((await f.updateTarget(full.id, { strategy: 'overlay' }, 'admin')).mode).toBe('skip-existing');
    expect((await f.updateTarget(full.id, { mode: 'full' }, 'admin')).mode).toBe('full');
    // A claim carries it to the agent.
    await f.versionChanged({ project: 'p', app: 'api', follows: 'promoted', version: 'v1', source: 'promote', by: 'admin' });
    expect(await f.claim(node.id)).toMatchObject({ task: { version: 'v1' }, target: { id: skip.id, mode: 'skip-existing' } });
  });

  it('a promote queues a task per following target; latest wins; claims, reports and success', async () => {
    const { c, f } = await fleetWithClock(ctx);
    const { node } = await enrolled(c, 'n1');
    const t = await f.addTarget({ project: 'p', app: 'web', node: 'n1', path: '/srv/web', by: 'admin' });
    await f.addTarget({ project: 'p', app: 'web', node: 'n1', path: '/srv/latest', follows: 'latest', by: 'admin' });
    const [t1] = await f.versionChanged({ project: 'p', app: 'web', follows: 'promoted', version: 'v1', source: 'promote', by: 'admin' });
    expect(t1).toMatchObject({ state: 'PENDING', version: 'v1', target: t.id });
    // The same version again changes nothing; a newer one replaces the queued task.
    expect((await f.versionChanged({ project: 'p', app: 'web', follows: 'promoted', version: 'v1', source: 'promote', by: 'admin' }))[0]!.id).toBe(t1!.id);
    const [t2] = await f.versionChanged({ project: 'p', app: 'web', follows: 'promoted', version: 'v2', manifest: 'sha256:00', source: 'promote', by: 'admin' });
    expect((await f.task(t1!.id))).toMatchObject({ state: 'CANCELED', error: { code: 'SUPERSEDED', reason: 'superseded by version v2 (promote)' } });
    const claim = await f.claim(node.id);
    expect(claim).toMatchObject({ task: { id: t2!.id, state: 'RUNNING', attempts: 1, version: 'v2' }, target: { path: '/srv/web' } });
    expect(await f.claim(node.id)).toBeUndefined(); // one running task per node
    await f.report(node.id, t2!.id, claim!.attempt_id, { stage: 'fetch', progress: 0.5, logs: [{ line: 'fetching 3 chunks' }] });
    const done = await f.report(node.id, t2!.id, claim!.attempt_id, { outcome: { ok: true, result: { files_added: 3, files_changed: 1, files_deleted: 2, bytes_fetched: 1234, seconds: 0.2 } } });
    expect(done).toMatchObject({ state: 'SUCCESS', progress: 1, result: { files_added: 3, bytes_fetched: 1234 } });
    expect((await f.task(t2!.id)).logs.map((l) => l.line)).toEqual(['fetching 3 chunks']);
    const st = await f.targetStatus(t.id);
    expect(st).toMatchObject({ state: 'running', target: { current_version: 'v2', last_status: 'SUCCESS' }, queued: null, running: null });
    expect(st.history[0]).toMatchObject({ to_version: 'v2', from_version: null, status: 'SUCCESS', files: { added: 3, changed: 1, deleted: 2 }, bytes: 1234 });
    // A report after the end is refused: the attempt is no longer current.
    const late = await errorOf(f.report(node.id, t2!.id, claim!.attempt_id, { logs: [{ line: 'late' }] }));
    expect(late.code).toBe('LOCKED');
    expect(late.details).toMatchObject({ reason: 'stale_attempt', state: 'SUCCESS' });
    // Another node may not report on it.
    const { node: n2 } = await enrolled(c, 'n2');
    expect((await errorOf(f.report(n2.id, t2!.id, claim!.attempt_id, {}))).code).toBe('FORBIDDEN');
    // Push moves `latest`: only the target following latest gets a task.
    const pushed = await f.versionChanged({ project: 'p', app: 'web', follows: 'latest', version: 'v3', source: 'push', by: 'admin' });
    expect(pushed.map((x) => x.version)).toEqual(['v3']);
    expect((await eventsOf(c, 'task.')).map((e) => e.type)).toEqual(['task.created', 'task.canceled', 'task.created', 'task.running', 'task.succeeded', 'task.created']);
  });

  it('a lost agent: its lease expires, the task retries with backoff, a report from the dead attempt is refused', async () => {
    const { c, f, clock } = await fleetWithClock(ctx);
    const { node } = await enrolled(c, 'n1');
    const t = await f.addTarget({ project: 'p', app: 'web', node: 'n1', path: '/srv/web', by: 'admin' });
    const task = await f.enqueue(t.id, { version: 'v1', source: 'manual', by: 'admin' });
    const a1 = (await f.claim(node.id))!;
    // Heartbeats renew the lease of the attempt they name.
    clock.t += 20_000;
    expect((await f.heartbeat(node.id, { task: { id: task.id, attempt_id: a1.attempt_id } })).task_current).toBe(true);
    clock.t += 20_000;
    expect((await f.sweep()).expired).toBe(0);
    clock.t += 11_000;
    expect((await f.sweep()).expired).toBe(1);
    let cur = await f.task(task.id);
    expect(cur).toMatchObject({ state: 'RETRYING', attempts: 1, error: { code: 'LEASE_EXPIRED' } });
    expect(cur.error!.reason).toMatch(/node n1 stopped reporting/);
    // Backoff: 5 s nominal for the first retry, jitter 0.5 -> 3.75 s.
    expect(Date.parse(cur.next_attempt!) - clock.t).toBe(3750);
    await f.heartbeat(node.id);
    expect(await f.claim(node.id)).toBeUndefined();
    clock.t += 3750;
    const a2 = (await f.claim(node.id))!;
    expect(a2.task.attempts).toBe(2);
    expect(a2.attempt_id).not.toBe(a1.attempt_id);
    const stale = await errorOf(f.report(node.id, task.id, a1.attempt_id, { outcome: { ok: true, result: {} } }));
    expect(stale.code).toBe('LOCKED');
    expect(stale.message).toMatch(/no longer current/);
    expect((await f.heartbeat(node.id, { task: { id: task.id, attempt_id: a1.attempt_id } })).task_current).toBe(false);
    await f.report(node.id, task.id, a2.attempt_id, { outcome: { ok: true, result: { files_added: 1 } } });
    cur = await f.task(task.id);
    expect(cur.state).toBe('SUCCESS');
    expect(cur.logs.map((l) => l.line)).toEqual([expect.stringMatching(/^attempt 1 failed: LEASE_EXPIRED: /)]);
    expect((await eventsOf(c, 'sync.')).map((e) => e.type)).toEqual(['sync.target_recovered']);
  });

  it('a restarted server gives agents a lease\'s worth of time to report before anything expires', async () => {
    const url = await ctx.freshUrl();
    const { c, f, clock } = await fleetWithClock(ctx, url);
    const { node } = await enrolled(c, 'n1');
    const t = await f.addTarget({ project: 'p', app: 'web', node: 'n1', path: '/srv/web', by: 'admin' });
    await f.enqueue(t.id, { version: 'v1', source: 'manual', by: 'admin' });
    const a = (await f.claim(node.id))!;
    await c.close();
    // The server was down for 5 minutes: the lease and the heartbeat are long stale.
    const later = { t: clock.t + 300_000 };
    const c2 = await ctx.open(url, { fleet: { now: () => later.t } });
    expect(await c2.fleet.sweep()).toMatchObject({ expired: 0, offline: 0 });
    // The agent finished meanwhile; its report is accepted.
    later.t += 5_000;
    expect((await c2.fleet.report(node.id, a.task.id, a.attempt_id, { outcome: { ok: true, result: {} } })).state).toBe('SUCCESS');
    // Past the grace, a silent agent is OFFLINE as usual.
    later.t += 30_000;
    expect((await c2.fleet.sweep()).offline).toBe(1);
  });

  it('retryable failures back off 5 s doubling to the cap, then FAIL; non-retryable fail at once; SYNC_DEGRADED and recovery', async () => {
    const { c, f, clock } = await fleetWithClock(ctx);
    const { node } = await enrolled(c, 'n1');
    const t = await f.addTarget({ project: 'p', app: 'web', node: 'n1', path: '/srv/web', by: 'admin' });
    await f.setProject('p', { retry: { max_attempts: 5, base_ms: 5_000, max_ms: 20_000 } }, 'admin');
    const task = await f.enqueue(t.id, { version: 'v1', source: 'manual', by: 'admin' });
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      const a = (await f.claim(node.id))!;
      expect(a.task.attempts).toBe(i + 1);
      const r = await f.report(node.id, task.id, a.attempt_id, { outcome: { ok: false, code: 'BACKEND', reason: 'store unreachable: connect ECONNREFUSED' } });
      if (r.state === 'RETRYING') {
        delays.push(Date.parse(r.next_attempt!) - clock.t);
        clock.t = Date.parse(r.next_attempt!);
      } else {
        expect(r).toMatchObject({ state: 'FAILED', attempts: 5, error: { code: 'BACKEND', reason: 'store unreachable: connect ECONNREFUSED' } });
      }
    }
    // Nominal 5, 10, 20 (cap), 20 s; jitter 0.5 gives three quarters of each.
    expect(delays).toEqual([3750, 7500, 15000, 15000]);
    const p = await f.project('p');
    expect(p.sync_degraded).toBe(true);
    expect(p.degraded_reason).toMatch(/failed 3 times in a row: BACKEND: store unreachable/);
    expect((await f.targetStatus(t.id)).history[0]).toMatchObject({ status: 'FAILED', error: { code: 'BACKEND' } });

    // A non-retryable code fails on the first attempt.
    const t2 = await f.addTarget({ project: 'p', app: 'web', node: 'n1', path: '/srv/other', by: 'admin' });
    const k2 = await f.enqueue(t2.id, { version: 'v1', source: 'manual', by: 'admin' });
    const a = (await f.claim(node.id))!;
    expect(a.task.id).toBe(k2.id);
    expect((await f.report(node.id, k2.id, a.attempt_id, { outcome: { ok: false, code: 'UNSAFE_PATH', reason: '/srv/other is outside what the node allows' } })).state).toBe('FAILED');

    // Retry by hand: attempt 1 again, and a success brings the project back.
    const again = await f.retry(task.id, 'admin');
    expect(again).toMatchObject({ state: 'PENDING', attempts: 0 });
    const b = (await f.claim(node.id))!;
    await f.report(node.id, task.id, b.attempt_id, { outcome: { ok: true, result: {} } });
    expect((await f.project('p')).sync_degraded).toBe(false);
    expect((await eventsOf(c, 'sync.')).map((e) => e.type)).toEqual(['sync.degraded', 'sync.target_recovered', 'sync.recovered']);
    expect((await eventsOf(c, 'task.failed')).map((e) => e.details)).toEqual([
      expect.objectContaining({ code: 'BACKEND', attempt: 5 }),
      expect.objectContaining({ code: 'UNSAFE_PATH', attempt: 1 }),
    ]);
  });

  it('pause: nothing is claimed while paused; resume releases it; a pause needs a reason; until lapses', async () => {
    const { c, f, clock } = await fleetWithClock(ctx);
    const { node } = await enrolled(c, 'n1');
    const t = await f.addTarget({ project: 'p', app: 'web', node: 'n1', path: '/srv/web', by: 'admin' });
    expect((await errorOf(f.pause(t.id, { reason: ' ', by: 'admin' }))).code).toBe('CONFIG_INVALID');
    const p = await f.pause(t.id, { reason: 'upgrading node 2', by: 'tok-ops' });
    expect(p.paused).toMatchObject({ reason: 'upgrading node 2', by: 'tok-ops' });
    expect((await errorOf(f.pause(t.id, { reason: 'again', by: 'x' }))).message).toMatch(/already paused by tok-ops/);
    await f.enqueue(t.id, { version: 'v3', source: 'promote', by: 'admin' });
    expect(await f.claim(node.id)).toBeUndefined();
    expect((await f.targetStatus(t.id)).state).toBe('paused');
    await f.resume(t.id, 'tok-ops');
    expect((await f.claim(node.id))?.task.version).toBe('v3');
    const t2 = await f.addTarget({ project: 'p', app: 'web', node: 'n1', path: '/srv/b', by: 'admin' });
    await f.pause(t2.id, { reason: 'maintenance window', by: 'admin', untilMs: clock.t + 60_000 });
    clock.t += 60_000;
    expect((await f.sweep()).resumed).toBe(1);
    expect((await f.target(t2.id)).paused).toBeNull();
    expect((await eventsOf(c, 'target.')).map((e) => e.type)).toEqual(['target.created', 'target.paused', 'target.resumed', 'target.created', 'target.paused', 'target.resumed']);
  });

  it('drain, slots and offline policy: a drained node claims nothing, max_parallel_nodes bounds a project, skip cancels offline nodes\' tasks', async () => {
    const { c, f, clock } = await fleetWithClock(ctx);
    const nodes = [];
    for (let i = 0; i < 3; i++) nodes.push((await enrolled(c, `n${i}`)).node);
    await f.setProject('p', { max_parallel_nodes: 2 }, 'admin');
    for (const n of nodes) {
      const t = await f.addTarget({ project: 'p', app: 'web', node: n.id, path: '/srv/web', by: 'admin' });
      await f.enqueue(t.id, { version: 'v1', source: 'manual', by: 'admin' });
    }
    await f.updateNode(nodes[0]!.id, { schedulable: false }, 'admin');
    expect(await f.claim(nodes[0]!.id)).toBeUndefined();
    await f.updateNode(nodes[0]!.id, { schedulable: true }, 'admin');
    const a = await f.claim(nodes[0]!.id);
    const b = await f.claim(nodes[1]!.id);
    expect(a && b).toBeTruthy();
    expect(await f.claim(nodes[2]!.id)).toBeUndefined(); // both slots taken
    await f.report(nodes[0]!.id, a!.task.id, a!.attempt_id, { outcome: { ok: true, result: {} } });
    const c3 = await f.claim(nodes[2]!.id);
    expect(c3).toBeTruthy();
    // Lowering the bound keeps running tasks; their slots go as they end.
    await f.setProject('p', { max_parallel_nodes: 1 }, 'admin');
    await f.report(nodes[1]!.id, b!.task.id, b!.attempt_id, { outcome: { ok: true, result: {} } });
    const slots = await sql<{ slot: number }>`select slot from fleet_slots where project = 'p' order by slot`.execute(c.cdb.db);
    // c3 took slot 0 (freed by a); slot 1 went away when b ended.
    expect(slots.rows.map((r) => Number(r.slot))).toEqual([0]);
    await f.report(nodes[2]!.id, c3!.task.id, c3!.attempt_id, { outcome: { ok: true, result: {} } });
    expect((await sql<{ slot: number }>`select slot from fleet_slots where project = 'p'`.execute(c.cdb.db)).rows.map((r) => Number(r.slot))).toEqual([0]);
    // Offline policy skip: a silent node's queued task is canceled with the reason.
    await f.setProject('p', { offline_policy: 'skip' }, 'admin');
    const t = (await f.targets({ node: nodes[1]!.id }))[0]!;
    const q = await f.enqueue(t.id, { version: 'v2', source: 'promote', by: 'admin' });
    for (const n of nodes.slice(0, 1)) await f.heartbeat(n.id);
    clock.t += 51_000;
    await f.heartbeat(nodes[0]!.id);
    const sw = await f.sweep();
    expect(sw.offline).toBe(2);
    expect(sw.skipped).toBe(1);
    expect(await f.task(q.id)).toMatchObject({ state: 'CANCELED', error: { code: 'NODE_OFFLINE' } });
  });

  it('cancel a running task: its agent is told on the next report; tasks list is cursor paged, newest first', async () => {
    const { c, f, clock } = await fleetWithClock(ctx);
    const { node } = await enrolled(c, 'n1');
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const t = await f.addTarget({ project: 'p', app: 'web', node: 'n1', path: `/srv/t${i}`, by: 'admin' });
      ids.push((await f.enqueue(t.id, { version: 'v1', source: 'manual', by: 'admin' })).id);
      clock.t += 1;
    }
    const a = (await f.claim(node.id))!;
    expect(a.task.id).toBe(ids[0]);
    await f.cancel(a.task.id, 'tok-ops');
    const told = await errorOf(f.report(node.id, a.task.id, a.attempt_id, { stage: 'commit' }));
    expect(told.code).toBe('LOCKED');
    expect(told.message).toMatch(/the task is CANCELED/);
    expect((await errorOf(f.cancel(a.task.id, 'x'))).code).toBe('CONFIG_INVALID');
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < 10; i++) {
      const page = await f.tasks({ project: 'p' }, { limit: 3, ...(cursor ? { cursor } : {}) });
      seen.push(...page.items.map((t) => t.id));
      if (!page.next) break;
      cursor = page.next;
    }
    expect(seen).toEqual([...ids].reverse());
    expect((await f.tasks({ state: 'CANCELED' })).items.map((t) => t.id)).toEqual([ids[0]]);
    expect((await f.tasks({ node: node.id, state: 'PENDING' })).items).toHaveLength(6);
  });

  it('task logs are bounded: later lines are counted, not stored', async () => {
    const clock = { t: Date.now() };
    const c = await ctx.open(undefined, { fleet: { now: () => clock.t, logMax: 5 } });
    const { node } = await enrolled(c, 'n1');
    const t = await c.fleet.addTarget({ project: 'p', app: 'web', node: 'n1', path: '/srv/web', by: 'admin' });
    await c.fleet.enqueue(t.id, { version: 'v1', source: 'manual', by: 'admin' });
    const a = (await c.fleet.claim(node.id))!;
    await c.fleet.report(node.id, a.task.id, a.attempt_id, { logs: Array.from({ length: 8 }, (_, i) => ({ line: `line ${i}` })) });
    const got = await c.fleet.task(a.task.id);
    expect(got.logs.map((l) => l.line)).toEqual(['line 0', 'line 1', 'line 2', 'line 3', 'line 4']);
    expect(got.log).toEqual({ count: 5, dropped: 3 });
  });
});
