// An in-memory server for the agent's tests: tasks to hand out, reports received, a switch that
// makes it unreachable, and attempts whose reports it refuses.
import { KkError } from '@kk/core';
import type { AgentApi, ClaimedTask, HeartbeatAnswer, Identity, Report, Tags } from '../src/index.js';

export class FakeApi implements AgentApi {
  down = false;
  intervalMs = 20;
  enrolments: { name: string; tags: Tags; registration_token: string }[] = [];
  queue: ClaimedTask[] = [];
  claims = 0;
  heartbeats: { task?: { id: string; attempt_id: string } }[] = [];
  reports: { task: string; attempt_id: string; report: Report }[] = [];
  refuse = new Set<string>();
  notCurrent = new Set<string>();

  private check() {
    if (this.down) throw new KkError('BACKEND', 'cannot reach the kk server at http://127.0.0.1:1: connect ECONNREFUSED');
  }

  async enrol(req: { registration_token: string; name: string; tags: Tags }): Promise<Identity> {
    this.check();
    if (req.registration_token !== 'kkr_good') throw new KkError('AUTH', 'the registration token is not valid');
    this.enrolments.push(req);
    return { node: 'nd-1', token: 'kkn_secret' };
  }

  async heartbeat(_id: Identity, hb: { task?: { id: string; attempt_id: string } }): Promise<HeartbeatAnswer> {
    this.check();
    this.heartbeats.push(hb);
    return { interval_ms: this.intervalMs, ...(hb.task ? { task_current: !this.notCurrent.has(hb.task.attempt_id) } : {}) };
  }

  async claim(_id: Identity, waitMs: number, signal?: AbortSignal): Promise<ClaimedTask | undefined> {
    this.check();
    const end = Date.now() + Math.min(waitMs, 50);
    while (!this.queue.length && Date.now() < end && !signal?.aborted) await new Promise((r) => setTimeout(r, 5));
    const t = this.queue.shift();
    if (t) this.claims++;
    return t;
  }

  async report(_id: Identity, task: string, attempt_id: string, report: Report): Promise<void> {
    this.check();
    if (this.refuse.has(attempt_id)) throw new KkError('LOCKED', `attempt ${attempt_id} of task ${task} is no longer current`);
    this.reports.push({ task, attempt_id, report });
  }

  outcomes() {
    return this.reports.filter((r) => r.report.outcome).map((r) => ({ task: r.task, ok: r.report.outcome!.ok }));
  }
}

export function task(n: number): ClaimedTask {
  return {
    attempt_id: `at-${n}`,
    lease_ms: 30_000,
    task: { id: `tk-${n}`, project: 'p', app: 'web', version: `v${n}`, manifest: null, attempts: 1 },
    target: { id: `tg-${n}`, path: `/srv/t${n}`, strategy: 'mirror', include: [], exclude: [] },
  };
}

/** Poll `cond` every 5 ms for at most `ms` (bounded); throws when it never holds. */
export async function until(cond: () => boolean | Promise<boolean>, ms = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
