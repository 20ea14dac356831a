// The nightly job (seed 6.3, DESIGN 8): keep the newest `retain_versions` of every app (never a
// version a channel such as `promoted` points to), then chunk GC, then drop expired upload
// sessions. Scheduled by a cron expression (default 03:00 server time); when several instances
// share a control database, the first to claim a scheduled minute runs it (a job-run row with a
// lease it renews); if that instance dies mid-run, another takes the run over once the lease
// lapses (checked every minute), so each scheduled run happens once per cluster.
import { Cron } from 'croner';
import { type GcResult, type RetentionResult, applyRetentionAll, gc, isKkError } from '@kk/core';
import type { RetentionApi, RetentionRun, ServerContext } from './context.js';
import { deleteVersion } from './routes/objects.js';

export type { RetentionRun };

const LAST_RUN = 'retention.last-run';
const JOB = 'retention';
/** How long a run's lease holds without renewal (renewed every third of it). */
const LEASE_MS = 60_000;

export class RetentionScheduler implements RetentionApi {
  private cron: Cron | undefined;
  private running: Promise<RetentionRun> | undefined;
  private takeover: NodeJS.Timeout | undefined;

  constructor(private readonly srv: ServerContext) {}

  /** A cron for the configured schedule, for reading its next run without starting it. */
  static pattern(schedule: string, timezone?: string): Cron {
    return new Cron(schedule, { paused: true, ...(timezone ? { timezone } : {}) });
  }

  start(): void {
    const { retentionSchedule, retentionTimezone } = this.srv.config;
    this.cron = new Cron(retentionSchedule, { protect: true, ...(retentionTimezone ? { timezone: retentionTimezone } : {}) }, () => void this.scheduled());
    this.takeover = setInterval(() => void this.resumeStale(), LEASE_MS);
    this.takeover.unref();
  }

  stop(): void {
    this.cron?.stop();
    clearInterval(this.takeover);
  }

  nextRun(): Date | null {
    return (this.cron ?? RetentionScheduler.pattern(this.srv.config.retentionSchedule, this.srv.config.retentionTimezone)).nextRun();
  }

  /**
   * The scheduled moment a cron firing at `at` stands for: the latest time of the schedule at or
   * before `at` (+1 s, for a timer that fires a hair early), looked for within the last 30 s, so
   * every instance names the same slot even when its timer fired late; otherwise `at` itself.
   */
  slotOf(at: Date): string {
    const cron = RetentionScheduler.pattern(this.srv.config.retentionSchedule, this.srv.config.retentionTimezone);
    const runs = cron.nextRuns(64, new Date(at.getTime() - 30_000)).filter((d) => d.getTime() <= at.getTime() + 1_000);
    cron.stop();
    const slot = runs.at(-1) ?? at;
    return new Date(Math.floor(slot.getTime() / 1000) * 1000).toISOString().slice(0, 19);
  }

  /**
   * What the cron calls: run the scheduled slot of `at` unless another instance claimed it.
   * Resolves whether this instance ran it.
   */
  async scheduled(at = new Date()): Promise<boolean> {
    const slot = this.slotOf(at);
    const { leases, owner } = this.srv.control;
    try {
      const r = await leases.runOnce(JOB, slot, owner, LEASE_MS, () => this.run({ trigger: 'schedule' }));
      return r.ran;
    } catch (err) {
      this.srv.log.error('scheduled retention failed', { err: String(err), slot });
      return true;
    }
  }

  /** Take over scheduled runs whose instance stopped renewing their lease (it died mid-run). */
  async resumeStale(): Promise<string[]> {
    const { leases, owner } = this.srv.control;
    let slots: string[] = [];
    try {
      slots = await leases.claimStale(JOB, owner, LEASE_MS);
      for (const slot of slots) {
        this.srv.log.warn('taking over a retention run whose instance stopped', { slot });
        await leases.holding(JOB, slot, owner, LEASE_MS, () => this.run({ trigger: 'schedule' })).catch((err) => this.srv.log.error('scheduled retention failed', { err: String(err), slot }));
      }
    } catch (err) {
      this.srv.log.error('retention takeover check failed', { err: String(err) });
    }
    return slots;
  }

  async lastRun(): Promise<RetentionRun | undefined> {
    return this.srv.control.settings.get<RetentionRun>(LAST_RUN);
  }

  /** Run now (one run at a time per instance; a second caller shares the first run). */
  run(opts: { trigger: 'schedule' | 'api'; dryRun?: boolean; keep?: number; token?: string }): Promise<RetentionRun> {
    this.running ??= this.execute(opts).finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async execute(opts: { trigger: 'schedule' | 'api'; dryRun?: boolean; keep?: number; token?: string }): Promise<RetentionRun> {
    const { srv } = this;
    const started = new Date().toISOString();
    const keep = opts.keep ?? srv.config.retainVersions;
    const dryRun = !!opts.dryRun;
    const actor = { token: opts.token ?? 'scheduler' };
    let results: RetentionResult[] = [];
    const deleted: RetentionRun['deleted'] = [];
    if (keep) {
      // Decide with core's rules, delete through the server so each deletion is audited and
      // announced (and a channel that moved since is still respected).
      results = await applyRetentionAll({ store: srv.store, keep, dryRun: true });
      for (const r of results) {
        for (const version of r.deleted) {
          if (dryRun) {
            deleted.push({ project: r.project, app: r.app, version });
            continue;
          }
          let gone: boolean;
          try {
            gone = await deleteVersion(srv, undefined, r.project, r.app, version, actor);
          } catch (err) {
            // The log, the report and the `delete` event must agree with the store: a failure
            // after the ref was removed is still a deletion (deleteVersion emitted its event).
            gone = !(await srv.store.getRef(r.project, r.app, version).catch(() => true));
            if (!gone) srv.log.warn('retention kept a version', { project: r.project, app: r.app, version, reason: String(err) });
            else srv.log.warn('retention deleted a version but a later step failed', { project: r.project, app: r.app, version, err: String(err) });
          }
          if (gone) {
            deleted.push({ project: r.project, app: r.app, version });
            srv.metrics.versionsDeleted.inc();
          }
        }
      }
    }
    let gcResult: GcResult | null = null;
    let gcError: string | undefined;
    try {
      gcResult = await gc({ store: srv.store, dryRun, graceMs: srv.config.gcGraceMs });
      if (!dryRun) srv.metrics.gcBytesFreed.inc(gcResult.bytesFreed);
    } catch (err) {
      if (!isKkError(err, 'LOCKED') && !isKkError(err, 'FORBIDDEN')) throw err;
      gcError = (err as Error).message;
    }
    const uploadsExpired = dryRun ? 0 : await srv.control.uploads.expire();
    const run: RetentionRun = {
      started,
      finished: new Date().toISOString(),
      trigger: opts.trigger,
      dry_run: dryRun,
      retain_versions: keep ?? null,
      apps: results.length,
      deleted,
      kept_pinned: results.flatMap((r) =>
        r.decisions.filter((d) => d.action === 'keep' && d.reason.startsWith('channel')).map((d) => ({ project: r.project, app: r.app, version: d.version, reason: d.reason })),
      ),
      gc: gcResult,
      uploads_expired: uploadsExpired,
    };
    if (gcError) run.gc_error = gcError;
    srv.metrics.retentionRuns.inc({ result: gcError ? 'gc_skipped' : 'ok' });
    if (!dryRun) {
      await srv.control.settings.put(LAST_RUN, run);
      await srv.activity(undefined, 'retention', { details: { deleted: deleted.length, bytes_freed: gcResult?.bytesFreed ?? 0, trigger: opts.trigger } }, actor);
    }
    srv.log.info('retention run', { trigger: opts.trigger, dry_run: dryRun, deleted: deleted.length, bytes_freed: gcResult?.bytesFreed, gc_error: gcError });
    return run;
  }
}
