// The agent's loops (DESIGN 13): enrol once, heartbeat at the interval the server sets, long-poll
// for work, run one task at a time (a serial queue), stream stage/progress/log reports through
// the outbox, and send what the outbox holds whenever the server is reachable. A task that has
// started is finished even while the server is away; its reports wait in the outbox. stop()
// claims nothing more, lets the current apply finish (core's apply is journaled, so one cut short
// by a hard kill is finished by the next run), sends what it can, and returns.
import { setMaxListeners } from 'node:events';
import { hostname } from 'node:os';
import { KkError, isKkError } from '@kk/core';
import type { AgentApi, ClaimedTask, Identity, LogLine, Report, Tags, TaskOutcome } from './api.js';
import type { TaskExecutor } from './executor.js';
import { type StoredIdentity, loadIdentity, saveIdentity } from './identity.js';
import { Outbox } from './outbox.js';

export interface AgentOptions {
  api: AgentApi;
  executor: TaskExecutor;
  stateDir: string;
  /** Server URL, recorded with the identity. */
  server: string;
  /** Node name (enrolment). */
  name: string;
  tags?: Tags;
  /** Needed only for the first start (no identity in the state dir yet). */
  registrationToken?: string;
  /** Long-poll wait. Default 25 s. */
  pollWaitMs?: number;
  /** Batch reports at most this often while a task runs. Default 1 s. */
  reportEveryMs?: number;
  /** Heartbeat interval until the server says otherwise. Default 10 s. */
  heartbeatMs?: number;
  /** What the agent says about itself in heartbeats. */
  info?: () => Record<string, unknown>;
  log?: (line: string) => void;
  /** The deploy loop (deploy-loop.ts), started and stopped with the sync loops. */
  deploys?: { start(id: Identity): void; stop(): Promise<void> };
}

export interface AgentStats {
  tasks: number;
  succeeded: number;
  failed: number;
  refusedReports: number;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

export class Agent {
  readonly outbox: Outbox;
  readonly stats: AgentStats = { tasks: 0, succeeded: 0, failed: 0, refusedReports: 0 };
  identity: StoredIdentity | undefined;
  private heartbeatMs: number;
  private current: ClaimedTask | undefined;
  /** Attempts the server told us are no longer current: their reports are not sent. */
  private abandoned = new Set<string>();
  private readonly stopping = new AbortController();
  private loops: Promise<unknown>[] = [];
  private wake: (() => void) | undefined;
  private readonly log: (line: string) => void;

  constructor(private readonly opts: AgentOptions) {
    this.outbox = new Outbox(opts.stateDir);
    this.heartbeatMs = opts.heartbeatMs ?? 10_000;
    this.log = opts.log ?? (() => {});
    // Each long-poll and sleep listens for stop(); they come and go, but may briefly overlap.
    setMaxListeners(100, this.stopping.signal);
  }

  /** The identity in the state dir, else enrol with the registration token (AUTH if it is refused). */
  async ensureIdentity(): Promise<StoredIdentity> {
    const have = await loadIdentity(this.opts.stateDir);
    if (have) return (this.identity = have);
    if (!this.opts.registrationToken) {
      throw new KkError('CONFIG_MISSING', `the agent has no identity in ${this.opts.stateDir} and no registration token`, { hint: 'pass --registration-token (create one with `kk node token create`)' });
    }
    const id = await this.opts.api.enrol({ registration_token: this.opts.registrationToken, name: this.opts.name, tags: this.opts.tags ?? {}, info: this.info() });
    const stored: StoredIdentity = { ...id, server: this.opts.server, name: this.opts.name, enrolled: new Date().toISOString() };
    await saveIdentity(this.opts.stateDir, stored);
    this.log(`enrolled as node ${id.node} (${this.opts.name})`);
    return (this.identity = stored);
  }

  private info(): Record<string, unknown> {
    return { host: hostname(), pid: process.pid, node_version: process.version, ...this.opts.info?.() };
  }

  /** Enrol if needed, then run the loops until stop(). */
  async start(): Promise<void> {
    const id = await this.ensureIdentity();
    this.loops = [this.heartbeatLoop(id), this.workLoop(id), this.flushLoop(id)];
    this.opts.deploys?.start(id);
  }

  get running(): ClaimedTask | undefined {
    return this.current;
  }

  /** Resolves when every loop has ended (after stop()). */
  async done(): Promise<void> {
    await Promise.all(this.loops);
  }

  /** Claim nothing more, let the current task finish, send what the outbox holds (bounded), stop. */
  async stop(flushTimeoutMs = 5_000): Promise<void> {
    this.stopping.abort();
    await this.opts.deploys?.stop();
    await this.done();
    if (this.identity) {
      await Promise.race([this.outbox.flush(this.opts.api, this.identity).then((r) => this.noteRefused(r.refused)).catch(() => {}), sleep(flushTimeoutMs)]);
    }
  }

  private get stopped(): boolean {
    return this.stopping.signal.aborted;
  }

  private async heartbeatLoop(id: Identity): Promise<void> {
    for (let i = 0; !this.stopped; i++) {
      const cur = this.current;
      try {
        const a = await this.opts.api.heartbeat(id, { info: this.info(), ...(cur ? { task: { id: cur.task.id, attempt_id: cur.attempt_id } } : {}) });
        if (a.interval_ms > 0) this.heartbeatMs = a.interval_ms;
        if (cur && a.task_current === false && !this.abandoned.has(cur.attempt_id)) {
          this.abandoned.add(cur.attempt_id);
          this.log(`task ${cur.task.id}: the server no longer counts attempt ${cur.attempt_id} (canceled or reassigned); its reports are dropped`);
        }
        this.wake?.();
      } catch (err) {
        this.log(`heartbeat failed: ${(err as Error).message}`);
        if (isKkError(err, 'AUTH')) this.log('the node token was refused: enrol again with a registration token');
      }
      await sleep(this.heartbeatMs, this.stopping.signal);
    }
  }

  private async flushLoop(id: Identity): Promise<void> {
    let delay = 1_000;
    while (!this.stopped) {
      await new Promise<void>((resolve) => {
        const signal = this.stopping.signal;
        const timer = setTimeout(fin, delay);
        signal.addEventListener('abort', fin, { once: true });
        this.wake = fin;
        function fin() {
          clearTimeout(timer);
          signal.removeEventListener('abort', fin);
          resolve();
        }
      });
      this.wake = undefined;
      if (this.stopped) return;
      try {
        const r = await this.outbox.flush(this.opts.api, id);
        this.noteRefused(r.refused);
        delay = r.pending ? Math.min(10_000, delay * 2) : 1_000;
      } catch {
        delay = Math.min(10_000, delay * 2);
      }
    }
  }

  private noteRefused(refused: { task: string; attempt_id: string; code: string; message: string }[]) {
    for (const r of refused) {
      this.stats.refusedReports++;
      this.abandoned.add(r.attempt_id);
      this.log(`report for task ${r.task} refused (${r.code}): ${r.message}`);
    }
  }

  private async workLoop(id: Identity): Promise<void> {
    let backoff = 500;
    while (!this.stopped) {
      let claim: ClaimedTask | undefined;
      try {
        claim = await this.opts.api.claim(id, this.opts.pollWaitMs ?? 25_000, this.stopping.signal);
        backoff = 500;
      } catch (err) {
        if (this.stopped) return;
        this.log(`claim failed: ${(err as Error).message}`);
        await sleep(backoff, this.stopping.signal);
        backoff = Math.min(5_000, backoff * 2);
        continue;
      }
      if (!claim) continue;
      // Claimed before stop() was seen: run it anyway (the server already counts it as ours).
      await this.runTask(id, claim);
    }
  }

  /** Run one task to its outcome, reporting through the outbox. */
  private async runTask(id: Identity, claim: ClaimedTask): Promise<void> {
    this.current = claim;
    this.stats.tasks++;
    const { task } = claim;
    this.log(`task ${task.id}: ${task.project}/${task.app} ${task.version} -> ${claim.target.path} (attempt ${task.attempts})`);
    let pending: Report = {};
    let lastSent = 0;
    const every = this.opts.reportEveryMs ?? 1_000;
    const emit = async (force: boolean) => {
      if (!force && Date.now() - lastSent < every) return;
      if (pending.stage === undefined && pending.progress === undefined && !pending.logs?.length && !pending.outcome) return;
      const r = pending;
      pending = {};
      lastSent = Date.now();
      if (this.abandoned.has(claim.attempt_id)) return;
      await this.outbox.add(task.id, claim.attempt_id, r);
      this.wake?.();
    };
    let chain = Promise.resolve();
    const queue = (force: boolean) => {
      chain = chain.then(() => emit(force)).catch((err) => this.log(`cannot write the outbox: ${(err as Error).message}`));
    };
    let outcome: TaskOutcome;
    try {
      outcome = await this.opts.executor.run(claim, {
        stage: (stage, progress) => {
          pending.stage = stage;
          if (progress !== undefined && Number.isFinite(progress)) pending.progress = progress;
          queue(false);
        },
        log: (line: string, level?: LogLine['level']) => {
          (pending.logs ??= []).push({ time: new Date().toISOString(), level: level ?? 'info', line });
          queue(false);
        },
      });
    } catch (err) {
      outcome = { ok: false, code: 'INTERNAL', reason: `the executor failed: ${(err as Error).message}` };
    }
    if (outcome.ok) this.stats.succeeded++;
    else this.stats.failed++;
    this.log(`task ${task.id}: ${outcome.ok ? 'SUCCESS' : `FAILED ${outcome.code}: ${outcome.reason}`}`);
    pending.outcome = outcome;
    queue(true);
    await chain;
    this.current = undefined;
    // Send it now if the server is there; otherwise the flush loop keeps trying.
    try {
      const r = await this.outbox.flush(this.opts.api, id);
      this.noteRefused(r.refused);
    } catch {
      /* the flush loop retries */
    }
  }
}
