// The fleet's concurrency rules are constraints in the schema (DESIGN 12). First each constraint
// is attacked directly with SQL the code would never write; then many claimers in separate threads
// (separate connections) race over one database, and the committed event log is replayed to show
// that no node ever ran two tasks and no project more than its max_parallel_nodes.
import { Worker } from 'node:worker_threads';
import { sql } from 'kysely';
import { expect, it } from 'vitest';
import type { Control } from '../src/index.js';
import { describeDialects } from './dialects.js';

async function rejects(c: Control, q: ReturnType<typeof sql>): Promise<string> {
  try {
    await q.execute(c.cdb.db);
  } catch (err) {
    return String((err as Error).message);
  }
  throw new Error('the database accepted a row that breaks a fleet constraint');
}

async function setup(c: Control, nodes: number, projects: { name: string; max: number }[], targetsPerNodePerProject: number) {
  const reg = await c.fleet.createRegistrationToken({ by: 'admin' });
  const ids: string[] = [];
  for (let i = 0; i < nodes; i++) ids.push((await c.fleet.enrol({ registrationToken: reg.token, name: `n${i}` })).node.id);
  for (const p of projects) {
    await c.fleet.setProject(p.name, { max_parallel_nodes: p.max }, 'admin');
    for (const id of ids) {
      for (let k = 0; k < targetsPerNodePerProject; k++) {
        await c.fleet.addTarget({ project: p.name, app: 'web', node: id, path: `/srv/${p.name}/${k}`, by: 'admin' });
      }
    }
    await c.fleet.versionChanged({ project: p.name, app: 'web', follows: 'promoted', version: 'v2', source: 'promote', by: 'admin' });
  }
  return ids;
}

describeDialects('fleet constraints', (ctx) => {
  it('the schema itself refuses what the rules forbid', async () => {
    const c = await ctx.open();
    const [n0] = await setup(c, 1, [{ name: 'p', max: 1 }], 3);
    const claim = (await c.fleet.claim(n0!))!;
    const [other, third] = (await c.fleet.tasks({ state: 'PENDING' })).items;
    // A second RUNNING task on the node (it would take the project's only slot too: give it a
    // slot that exists by raising the bound first).
    await c.fleet.setProject('p', { max_parallel_nodes: 2 }, 'admin');
    expect(await rejects(c, sql`update tasks set state = 'RUNNING', slot = 1, lease_expires_ms = 1, attempt_id = 'x', next_attempt_ms = null where id = ${other!.id}`)).toMatch(/unique|UNIQUE/);
    // Two tasks in one slot.
    expect(await rejects(c, sql`update tasks set state = 'RUNNING', node = 'elsewhere', slot = ${0}, lease_expires_ms = 1, attempt_id = 'x', next_attempt_ms = null where id = ${other!.id}`)).toMatch(/unique|UNIQUE/);
    // A slot beyond max_parallel_nodes does not exist.
    expect(await rejects(c, sql`update tasks set state = 'RUNNING', node = 'elsewhere', slot = 7, lease_expires_ms = 1, attempt_id = 'x', next_attempt_ms = null where id = ${other!.id}`)).toMatch(/foreign key|FOREIGN KEY/i);
    // RUNNING without a slot or a lease.
    expect(await rejects(c, sql`update tasks set state = 'RUNNING', node = 'elsewhere', next_attempt_ms = null where id = ${other!.id}`)).toMatch(/check|CHECK/i);
    // Two queued tasks for one target.
    expect(await rejects(c, sql`update tasks set target = ${other!.target} where id = ${third!.id}`)).toMatch(/unique|UNIQUE/);
    // Two targets for one directory of one node.
    const t = (await c.fleet.targets())[0]!;
    expect(await rejects(c, sql`insert into targets (id, project, app, node, path, strategy, include, exclude, follows, on_local_change, consecutive_failures, created, updated) values ('tg-x', 'p', 'api', ${t.node}, ${t.path}, 'mirror', '[]', '[]', 'promoted', 'overwrite', 0, 'x', 'x')`)).toMatch(/unique|UNIQUE/);
    // A FAILED task without a code.
    expect(await rejects(c, sql`update tasks set state = 'FAILED', slot = null, lease_expires_ms = null, next_attempt_ms = null, error_code = null where id = ${claim.task.id}`)).toMatch(/check|CHECK/i);
    // Nothing changed.
    expect((await c.fleet.tasks({ state: 'RUNNING' })).items.map((x) => x.id)).toEqual([claim.task.id]);
  });

  it('many claimers at once: never two running tasks per node, never more than max_parallel_nodes per project', async () => {
    const url = await ctx.freshUrl();
    const c = await ctx.open(url);
    const projects = [
      { name: 'alpha', max: 2 },
      { name: 'beta', max: 3 },
    ];
    const nodes = await setup(c, 8, projects, 2);
    const total = 8 * 2 * 2;
    const workers = 4;
    const results = await Promise.all(
      Array.from(
        { length: workers },
        (_, id) =>
          new Promise<{ claimed: number; conflicts: number; error?: string }>((resolve, reject) => {
            // Every worker claims for every node, in a different order, so claimers collide.
            const order = [...nodes.slice(id * 2), ...nodes.slice(0, id * 2)];
            const w = new Worker(new URL('./fleet-claimer.mjs', import.meta.url), { workerData: { id, url, nodes: order, deadlineMs: 60_000 } });
            w.once('message', resolve);
            w.once('error', reject);
          }),
      ),
    );
    for (const r of results) expect(r.error).toBeUndefined();
    expect(results.reduce((n, r) => n + r.claimed, 0)).toBe(total);
    const all = (await c.fleet.tasks({}, { limit: 500 })).items;
    expect(all.filter((t) => t.state === 'SUCCESS')).toHaveLength(total);
    expect(all.every((t) => t.attempts === 1)).toBe(true);

    // Replay the committed transitions in seq order.
    const evs = (await c.events.since(0, 100_000)).items.filter((e) => e.type === 'task.running' || e.type === 'task.succeeded');
    expect(evs.filter((e) => e.type === 'task.running')).toHaveLength(total);
    const perNode = new Map<string, number>();
    const perProject = new Map<string, number>();
    const maxSeen = new Map<string, number>();
    let maxNode = 0;
    for (const e of evs) {
      const node = String(e.details!.node);
      const d = e.type === 'task.running' ? 1 : -1;
      perNode.set(node, (perNode.get(node) ?? 0) + d);
      perProject.set(e.project!, (perProject.get(e.project!) ?? 0) + d);
      maxNode = Math.max(maxNode, perNode.get(node)!);
      maxSeen.set(e.project!, Math.max(maxSeen.get(e.project!) ?? 0, perProject.get(e.project!)!));
    }
    expect(maxNode).toBe(1);
    expect(maxSeen.get('alpha')).toBeLessThanOrEqual(2);
    expect(maxSeen.get('beta')).toBeLessThanOrEqual(3);
    // And the race was real: more than one task of a project ran at once at some point.
    expect(Math.max(...maxSeen.values())).toBeGreaterThan(1);
  }, 120_000);
});
