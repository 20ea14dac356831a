// The agent's loop against a fake server: enrols once (identity kept 0600), runs one task at a
// time, heartbeats name the running attempt at the server's interval, reports go through the
// outbox, a task started while the server is reachable is finished and reported after it comes
// back (even across a restart), refused reports are dropped, and stop() lets the current task end.
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isKkError } from '@kk/core';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { Agent, type ClaimedTask, type ExecutionContext, type TaskExecutor, type TaskOutcome, identityFile, Outbox } from '../src/index.js';
import { FakeApi, task, until } from './fake-api.js';

let dir: string;
const agents: Agent[] = [];
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kk-agent-'));
});
afterEach(async () => {
  await Promise.all(agents.splice(0).map((a) => a.stop(100)));
  await rm(dir, { recursive: true, force: true });
});

/** An executor the test releases task by task; it records how many run at once. */
class GatedExecutor implements TaskExecutor {
  active = 0;
  maxActive = 0;
  started: string[] = [];
  private gates = new Map<string, () => void>();
  outcome: (c: ClaimedTask) => TaskOutcome = () => ({ ok: true, result: { files_added: 1 } });

  async run(c: ClaimedTask, ctx: ExecutionContext): Promise<TaskOutcome> {
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    this.started.push(c.task.id);
    ctx.stage('fetch', 0.5);
    ctx.log(`working on ${c.task.id}`);
    await new Promise<void>((r) => this.gates.set(c.task.id, r));
    this.active--;
    return this.outcome(c);
  }

  release(id: string) {
    const g = this.gates.get(id);
    if (!g) return false;
    this.gates.delete(id);
    g();
    return true;
  }

  isWaiting(id: string) {
    return this.gates.has(id);
  }
}

function agent(api: FakeApi, ex: TaskExecutor, extra: Partial<ConstructorParameters<typeof Agent>[0]> = {}) {
  const a = new Agent({ api, executor: ex, stateDir: dir, server: 'http://kk.test', name: 'web-1', tags: { role: 'web' }, registrationToken: 'kkr_good', pollWaitMs: 50, reportEveryMs: 0, ...extra });
  agents.push(a);
  return a;
}

it('enrols once and keeps its node token in the state dir, mode 0600', async () => {
  const api = new FakeApi();
  const a = agent(api, new GatedExecutor());
  const id = await a.ensureIdentity();
  expect(id).toMatchObject({ node: 'nd-1', token: 'kkn_secret', server: 'http://kk.test', name: 'web-1' });
  expect((await stat(identityFile(dir))).mode & 0o777).toBe(0o600);
  const b = agent(api, new GatedExecutor(), { registrationToken: undefined });
  expect((await b.ensureIdentity()).token).toBe('kkn_secret');
  expect(api.enrolments).toEqual([{ registration_token: 'kkr_good', name: 'web-1', tags: { role: 'web' }, info: expect.any(Object) }]);
  await rm(identityFile(dir));
  const c = agent(api, new GatedExecutor(), { registrationToken: undefined });
  const err = await c.ensureIdentity().catch((e: unknown) => e);
  expect(isKkError(err, 'CONFIG_MISSING')).toBe(true);
  const d = agent(api, new GatedExecutor(), { registrationToken: 'kkr_wrong' });
  expect(isKkError(await d.ensureIdentity().catch((e: unknown) => e), 'AUTH')).toBe(true);
});

it('runs one task at a time; heartbeats name the running attempt; stage, log and outcome reach the server in order', async () => {
  const api = new FakeApi();
  api.queue.push(task(1), task(2), task(3));
  const ex = new GatedExecutor();
  const a = agent(api, ex);
  await a.start();
  for (const id of ['tk-1', 'tk-2', 'tk-3']) {
    await until(() => ex.isWaiting(id), 10_000, `${id} to start`);
    await until(() => api.heartbeats.some((h) => h.task?.id === id), 10_000, `a heartbeat naming ${id}`);
    expect(ex.started.filter((s) => s !== id).every((s) => !ex.isWaiting(s))).toBe(true);
    ex.release(id);
  }
  await until(() => api.outcomes().length === 3, 10_000, 'three outcomes');
  expect(ex.maxActive).toBe(1);
  expect(api.outcomes()).toEqual([{ task: 'tk-1', ok: true }, { task: 'tk-2', ok: true }, { task: 'tk-3', ok: true }]);
  const first = api.reports.filter((r) => r.task === 'tk-1');
  expect(first[0]!.report).toMatchObject({ stage: 'fetch' });
  expect(first.flatMap((r) => r.report.logs ?? []).map((l) => l.line)).toEqual(['working on tk-1']);
  expect(first[first.length - 1]!.report.outcome).toEqual({ ok: true, result: { files_added: 1 } });
  expect(first.every((r) => r.attempt_id === 'at-1')).toBe(true);
  expect(await a.outbox.entries()).toEqual([]);
  expect(a.stats).toMatchObject({ tasks: 3, succeeded: 3, failed: 0 });
});

it('finishes a task while the server is away; the outbox keeps its reports across a restart and sends them when it is back', async () => {
  const api = new FakeApi();
  api.queue.push(task(1));
  const ex = new GatedExecutor();
  const a = agent(api, ex);
  await a.start();
  await until(() => ex.isWaiting('tk-1'));
  api.down = true;
  ex.release('tk-1');
  await until(async () => (await a.outbox.entries()).some((e) => e.report.outcome), 10_000, 'the outcome in the outbox');
  await a.stop(50);
  expect(api.outcomes()).toEqual([]);
  // On disk, in order, after the agent is gone.
  const left = await new Outbox(dir).entries();
  expect(left[left.length - 1]).toMatchObject({ task: 'tk-1', attempt_id: 'at-1', report: { outcome: { ok: true } } });
  expect(left.map((e) => e.seq)).toEqual([...left.map((e) => e.seq)].sort((x, y) => x - y));
  // A new agent process on the same state dir, the server back.
  api.down = false;
  const b = agent(api, ex, { registrationToken: undefined });
  await b.start();
  await until(() => api.outcomes().length === 1, 10_000, 'the outcome delivered');
  expect(api.outcomes()).toEqual([{ task: 'tk-1', ok: true }]);
  await until(async () => (await b.outbox.entries()).length === 0, 10_000, 'an empty outbox');
  expect(api.reports.filter((r) => r.task === 'tk-1').flatMap((r) => r.report.logs ?? []).map((l) => l.line)).toEqual(['working on tk-1']);
  expect(api.enrolments).toHaveLength(1);
});

it('a report the server refuses (stale attempt) is dropped, not resent; a canceled attempt stops reporting', async () => {
  const api = new FakeApi();
  api.refuse.add('at-1');
  api.queue.push(task(1));
  const ex = new GatedExecutor();
  const a = agent(api, ex);
  await a.start();
  await until(() => ex.isWaiting('tk-1'));
  ex.release('tk-1');
  await until(() => a.stats.refusedReports >= 1, 10_000, 'a refusal');
  await until(async () => (await a.outbox.entries()).length === 0, 10_000, 'an empty outbox');
  expect(api.reports.filter((r) => r.task === 'tk-1')).toEqual([]);
  // The server says attempt 2 is no longer current (canceled): its final report is not sent.
  api.queue.push(task(2));
  await until(() => ex.isWaiting('tk-2'));
  await until(() => api.reports.some((r) => r.task === 'tk-2' && r.report.logs?.length), 10_000, 'the early reports of tk-2');
  const before = api.reports.filter((r) => r.task === 'tk-2').length;
  api.notCurrent.add('at-2');
  const seen = api.heartbeats.length;
  // The loop is sequential: a second heartbeat after this point means the first one's answer was handled.
  await until(() => api.heartbeats.slice(seen).filter((h) => h.task?.attempt_id === 'at-2').length >= 2, 10_000, 'two heartbeats naming at-2');
  ex.release('tk-2');
  await until(() => !a.running, 10_000, 'the task to end');
  expect(api.reports.filter((r) => r.task === 'tk-2').length).toBe(before);
  expect(api.outcomes()).toEqual([]);
});

it('stop() (SIGTERM) claims nothing more, lets the running task finish and reports it', async () => {
  const api = new FakeApi();
  api.queue.push(task(1), task(2));
  const ex = new GatedExecutor();
  const a = agent(api, ex);
  await a.start();
  await until(() => ex.isWaiting('tk-1'));
  const stopped = a.stop(2_000);
  let done = false;
  void stopped.then(() => (done = true));
  await new Promise((r) => setTimeout(r, 30));
  expect(done).toBe(false); // still running tk-1
  ex.release('tk-1');
  await stopped;
  expect(api.outcomes()).toEqual([{ task: 'tk-1', ok: true }]);
  expect(ex.started).toEqual(['tk-1']);
  expect(api.claims).toBe(1);
  expect(api.queue.map((t) => t.task.id)).toEqual(['tk-2']);
});
