// One deploy from start to end, as the seed orders it: pending -> executing -> the kind's own
// stages -> health_check -> success; a failure (the work fails, runs past its timeout, or the
// health check fails) records failed or timeout, marks the version bad and rolls back once:
// rolling_back -> health_check -> rolled_back | rollback_failed. A rollback never triggers
// another. Every status change is journalled before it is reported, so a restarted agent can
// finish what a crash interrupted (`recover`).
import { readFileSync } from 'node:fs';
import { KkError, isKkError } from '@kk/core';
import { healthCheck } from './health.js';
import { DeployJournal, type JournalEntry } from './journal.js';
import { type CommandType, type DeployCallbackPayload, type DeploySpec, type DeployStatus, type DeployStatusReport, type DeployType, isTerminal, PROGRESS } from './types.js';

/** Log lines a deploy keeps (the newest). */
export const MAX_LOG_LINES = 500;
/** After a timeout, how long the stopped work gets to settle before the rollback starts. */
const SETTLE_MS = 30_000;

export interface KindContext {
  id: string;
  signal: AbortSignal;
  /** Report a stage. */
  status(s: DeployStatus, progress: number, message?: string): Promise<void>;
  log(line: string): void;
  /** What the kind needs to undo itself; persist changes with save(). */
  saved: Record<string, unknown>;
  save(patch: Record<string, unknown>): Promise<void>;
  /** Remember a script's process group: a restarted agent ends what a crashed one left running. */
  track(pgid: number): void;
  /** A private scratch directory for this deploy. */
  scratch: string;
}

export interface AppliedResult {
  result: Record<string, unknown>;
  /** What was put in place (a version, an image): marked bad when the deploy fails. */
  version?: string;
}

export interface DeployKind {
  /** Refuse a bad spec before anything is touched (throws KkError CONFIG_INVALID / UNSAFE_PATH). */
  check(): Promise<void> | void;
  apply(ctx: KindContext): Promise<AppliedResult>;
  /** Put back what was there before, from ctx.saved. NOTHING_TO_ROLLBACK when there was nothing. */
  rollback(ctx: KindContext): Promise<{ to?: string }>;
}

export type KindFactory = (spec: DeploySpec) => DeployKind;

export interface DeployerOptions {
  journalDir: string;
  kinds: KindFactory;
  onReport?: (r: DeployStatusReport) => void | Promise<void>;
  onCallback?: (p: DeployCallbackPayload) => void | Promise<void>;
  /** Finished, reported journal entries kept (for manual rollbacks). Default 100. */
  keep?: number;
}

class Timeout extends Error {}

export class Deployer {
  readonly journal: DeployJournal;
  private sentLogs = new Map<string, number>();

  constructor(private readonly opts: DeployerOptions) {
    this.journal = new DeployJournal(opts.journalDir);
  }

  /** Run a deploy to its final status. Throws only for a spec refused before anything ran. */
  async deploy(id: string, spec: DeploySpec, meta: { attempt_id?: string } = {}): Promise<JournalEntry> {
    const kind = this.opts.kinds(spec);
    const e = newEntry(id, spec);
    if (meta.attempt_id) e.attempt_id = meta.attempt_id;
    await this.journal.write(e);
    await this.report(e, 'pending', PROGRESS.pending, 'accepted');
    try {
      await kind.check();
    } catch (err) {
      return this.finishFailed(e, 'failed', err, kind, false);
    }
    return this.work(e, kind);
  }

  /** Manual rollback of an earlier deploy (`deploy.rollback`), from what that deploy saved. */
  async rollbackOf(id: string, of: string, meta: { attempt_id?: string } = {}): Promise<JournalEntry> {
    const prev = await this.journal.read(of);
    if (!prev) throw new KkError('NOT_FOUND', `this node has no record of deploy ${of}`, { hint: 'roll back a deploy this node ran' });
    const e = newEntry(id, prev.spec);
    if (meta.attempt_id) e.attempt_id = meta.attempt_id;
    e.rollback_of = of;
    e.saved = prev.saved;
    if (prev.bad_version === undefined && typeof prev.result.version === 'string') e.bad_version = prev.result.version;
    await this.journal.write(e);
    return this.doRollback(e, this.opts.kinds(prev.spec), 'manual rollback');
  }

  /** Finish every deploy a crash interrupted: re-check health or roll back. */
  async recover(): Promise<JournalEntry[]> {
    const out: JournalEntry[] = [];
    for (const e of await this.journal.list()) {
      if (e.phase === 'done') continue;
      e.recoveries++;
      this.log(e, `agent restarted during ${e.status} (phase ${e.phase}): resuming`);
      endOrphans(e);
      const kind = this.opts.kinds(e.spec);
      if (e.phase === 'rollback') out.push(await this.doRollback(e, kind, 'resumed after a restart'));
      else if (e.phase === 'health') out.push(await this.checkThenFinish(e, kind));
      else out.push(await this.finishFailed(e, 'failed', new KkError('BACKEND', 'the agent stopped while the deploy was running', { hint: 'the deploy was rolled back; run it again' }), kind, true));
    }
    return out;
  }

  /** Final outcomes the server does not have yet. */
  async unreported(): Promise<JournalEntry[]> {
    return (await this.journal.list()).filter((e) => e.phase === 'done' && !e.reported);
  }

  async markReported(id: string): Promise<void> {
    const e = await this.journal.read(id);
    if (e && !e.reported) {
      e.reported = true;
      await this.journal.write(e);
    }
  }

  private async work(e: JournalEntry, kind: DeployKind): Promise<JournalEntry> {
    // tar's own range starts at 0 (uploading 0-30).
    await this.report(e, 'executing', e.spec.type === 'tar' ? 0 : PROGRESS.executing, 'starting');
    const ac = new AbortController();
    const limit = e.spec.timeout_ms ?? 600_000;
    let timer: NodeJS.Timeout | undefined;
    let pendingWork: Promise<AppliedResult> | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          ac.abort();
          reject(new Timeout(`the deploy ran past its ${limit} ms timeout`));
        }, limit);
      });
      const work = kind.apply(this.ctx(e, ac.signal));
      work.catch(() => {});
      pendingWork = work;
      const applied = await Promise.race([work, timeout]);
      e.result = applied.result;
      if (applied.version !== undefined) e.result.version = applied.version;
    } catch (err) {
      if (err instanceof Timeout && pendingWork) {
        // The work was told to stop (scripts are killed); a rollback must not race what is left of it.
        let wait: NodeJS.Timeout | undefined;
        await Promise.race([pendingWork.then(() => {}, () => {}), new Promise<void>((r) => (wait = setTimeout(r, SETTLE_MS)))]);
        clearTimeout(wait);
      }
      return this.finishFailed(e, err instanceof Timeout ? 'timeout' : 'failed', err, kind, true);
    } finally {
      clearTimeout(timer);
    }
    e.phase = 'health';
    return this.checkThenFinish(e, kind);
  }

  private async checkThenFinish(e: JournalEntry, kind: DeployKind): Promise<JournalEntry> {
    if (e.spec.health) {
      await this.report(e, 'health_check', PROGRESS.health_check, `checking health (${e.spec.health.type})`);
      const h = await healthCheck(e.spec.health, { ...(e.spec.env ? { env: e.spec.env } : {}) });
      e.health_check = h;
      this.log(e, `health check ${h.success ? 'passed' : 'failed'} after ${h.retry_count} retr${h.retry_count === 1 ? 'y' : 'ies'}${h.error ? `: ${h.error}` : ''}`);
      if (!h.success) return this.finishFailed(e, 'failed', new KkError('BACKEND', `health check failed: ${h.error ?? 'unhealthy'}`, { hint: 'see the deploy logs; the previous release was put back' }), kind, true);
    }
    e.phase = 'done';
    await this.report(e, 'success', PROGRESS.done, 'deployed');
    return this.finish(e);
  }

  private async finishFailed(e: JournalEntry, status: 'failed' | 'timeout', err: unknown, kind: DeployKind, mayRollback: boolean): Promise<JournalEntry> {
    e.error = err instanceof Error ? (isKkError(err) && err.hint ? `${err.message} (${err.hint})` : err.message) : String(err);
    e.error_code = status === 'timeout' ? 'TIMEOUT' : isKkError(err) ? err.code : 'FAILED';
    const v = e.result.version ?? e.saved.version;
    if (typeof v === 'string') e.bad_version = v;
    const roll = mayRollback && e.spec.rollback !== false;
    if (!roll) e.phase = 'done';
    await this.report(e, status, e.progress, e.error);
    if (!roll) return this.finish(e);
    return this.doRollback(e, kind, e.error);
  }

  private async doRollback(e: JournalEntry, kind: DeployKind, why: string): Promise<JournalEntry> {
    e.phase = 'rollback';
    const t0 = Date.now();
    await this.report(e, 'rolling_back', e.progress, `rolling back: ${why}`);
    const ac = new AbortController();
    let to: string | undefined;
    try {
      const r = await kind.rollback(this.ctx(e, ac.signal));
      to = r.to;
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      e.rollback = { success: false, duration: Date.now() - t0, error: msg, timestamp: new Date().toISOString() };
      e.phase = 'done';
      await this.report(e, 'rollback_failed', e.progress, `rollback failed: ${msg}`);
      return this.finish(e);
    }
    e.rollback = { success: true, duration: 0, ...(to ? { to } : {}), timestamp: '' };
    if (e.spec.health) {
      await this.report(e, 'health_check', PROGRESS.health_check, 'checking health after the rollback');
      const h = await healthCheck(e.spec.health, { ...(e.spec.env ? { env: e.spec.env } : {}) });
      e.rollback.health_check = h;
      if (!h.success) {
        e.rollback.success = false;
        e.rollback.error = `health check after the rollback failed: ${h.error ?? 'unhealthy'}`;
      }
    }
    e.rollback.duration = Date.now() - t0;
    e.rollback.timestamp = new Date().toISOString();
    e.phase = 'done';
    if (e.rollback.success) await this.report(e, 'rolled_back', PROGRESS.done, `rolled back${to ? ` to ${to}` : ''}`);
    else await this.report(e, 'rollback_failed', e.progress, e.rollback.error!);
    return this.finish(e);
  }

  private async finish(e: JournalEntry): Promise<JournalEntry> {
    const success = e.status === 'success' || (e.status === 'rolled_back' && !!e.rollback_of);
    const result: Record<string, unknown> = { ...e.result };
    if (e.health_check) result.health_check = e.health_check;
    if (e.rollback) result.rollback = e.rollback;
    if (e.bad_version) result.bad_version = e.bad_version;
    if (e.error_code) result.error_code = e.error_code;
    e.callback = {
      callback_id: e.id,
      command_type: e.rollback_of ? 'deploy.rollback' : commandType(e.spec.type),
      deploy_type: e.spec.type,
      status: e.status,
      success,
      result,
      error: e.error ?? e.rollback?.error ?? '',
      duration: Date.parse(e.history[e.history.length - 1]!.time) - Date.parse(e.started),
      timestamp: new Date().toISOString(),
    };
    await this.journal.write(e);
    if (this.opts.onCallback) {
      try {
        await this.opts.onCallback(e.callback);
        e.reported = true;
        await this.journal.write(e);
        await this.journal.prune(this.opts.keep ?? 100);
      } catch {
        // Kept unreported: sent again after a reconnect (unreported()).
      }
    }
    return e;
  }

  private ctx(e: JournalEntry, signal: AbortSignal): KindContext {
    return {
      id: e.id,
      signal,
      saved: e.saved,
      scratch: `${this.journal.dir}/${e.id}.d`,
      status: (s, progress, message) => this.report(e, s, progress, message ?? s),
      log: (line) => this.log(e, line),
      track: (pgid) => {
        const list = Array.isArray(e.saved.pgids) ? (e.saved.pgids as number[]) : [];
        e.saved.pgids = [...list, pgid].slice(-20);
        void this.journal.write(e).catch(() => {});
      },
      save: async (patch) => {
        Object.assign(e.saved, patch);
        await this.journal.write(e);
      },
    };
  }

  private log(e: JournalEntry, line: string): void {
    e.logs.push(`${new Date().toISOString()} ${line}`);
    if (e.logs.length > MAX_LOG_LINES) {
      const drop = e.logs.length - MAX_LOG_LINES;
      e.logs.splice(0, drop);
      this.sentLogs.set(e.id, Math.max(0, (this.sentLogs.get(e.id) ?? 0) - drop));
    }
  }

  private async report(e: JournalEntry, status: DeployStatus, progress: number, message: string): Promise<void> {
    const time = new Date().toISOString();
    progress = Math.max(0, Math.min(100, Math.round(progress)));
    const changed = e.status !== status || e.history.length === 0;
    e.status = status;
    e.progress = progress;
    if (changed) e.history.push({ status, progress, message, time });
    await this.journal.write(e);
    if (!this.opts.onReport) return;
    const from = this.sentLogs.get(e.id) ?? 0;
    const logs = e.logs.slice(from);
    this.sentLogs.set(e.id, e.logs.length);
    if (isTerminal(status)) this.sentLogs.delete(e.id);
    try {
      await this.opts.onReport({ deploy_id: e.id, command_type: e.rollback_of ? 'deploy.rollback' : commandType(e.spec.type), status, progress, stage: status, message, logs, timestamp: time });
    } catch {
      // Reports are best effort (the final callback is the one that is retried).
    }
  }
}

/** Kill the process groups of scripts a crashed agent left running (only if still a shell). */
function endOrphans(e: JournalEntry): void {
  const pgids = Array.isArray(e.saved.pgids) ? (e.saved.pgids as number[]) : [];
  for (const pg of pgids) {
    try {
      const comm = readFileSync(`/proc/${pg}/comm`, 'utf8').trim();
      if (comm !== 'sh' && comm !== 'dash' && comm !== 'bash') continue;
      process.kill(-pg, 'SIGKILL');
    } catch {
      // gone
    }
  }
  e.saved.pgids = [];
}

export function commandType(t: DeployType): CommandType {
  return `deploy.${t}` as CommandType;
}

function newEntry(id: string, spec: DeploySpec): JournalEntry {
  return { id, spec, status: 'pending', progress: 0, started: new Date().toISOString(), history: [], saved: {}, phase: 'apply', logs: [], result: {}, reported: false, recoveries: 0 };
}
