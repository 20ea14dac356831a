// The nightly job (seed 6.3, DESIGN 8): keep the newest `retain_versions` of every app (never a
// version a channel such as `promoted` points to), then chunk GC, then drop expired upload
// sessions. Scheduled by a cron expression (default 03:00 server time); when several instances
// share a store, the first to claim a scheduled minute runs it.
import { Cron } from 'croner';
import { type GcResult, type RetentionResult, applyRetentionAll, gc, isKkError } from '@kk/core';
import type { KkServer } from './server.js';
import { deleteVersion } from './routes/objects.js';
import { Uploads } from './uploads.js';

export interface RetentionRun {
  started: string;
  finished: string;
  trigger: 'schedule' | 'api';
  dry_run: boolean;
  retain_versions: number | null;
  apps: number;
  deleted: { project: string; app: string; version: string }[];
  kept_pinned: { project: string; app: string; version: string; reason: string }[];
  gc: GcResult | null;
  gc_error?: string;
  uploads_expired: number;
}

const LAST_RUN = 'server/retention/last-run';

export class RetentionScheduler {
  private cron: Cron | undefined;
  private running: Promise<RetentionRun> | undefined;

  constructor(private readonly srv: KkServer) {}

  /** A cron for the configured schedule, for reading its next run without starting it. */
  static pattern(schedule: string, timezone?: string): Cron {
    return new Cron(schedule, { paused: true, ...(timezone ? { timezone } : {}) });
  }

  start(): void {
    const { retentionSchedule, retentionTimezone } = this.srv.config;
    this.cron = new Cron(retentionSchedule, { protect: true, ...(retentionTimezone ? { timezone: retentionTimezone } : {}) }, () => this.scheduled());
  }

  stop(): void {
    this.cron?.stop();
  }

  nextRun(): Date | null {
    return (this.cron ?? RetentionScheduler.pattern(this.srv.config.retentionSchedule, this.srv.config.retentionTimezone)).nextRun();
  }

  private async scheduled(): Promise<void> {
    // One instance per scheduled minute: the claim is create-if-absent in the shared store.
    const minute = new Date().toISOString().slice(0, 16).replace(/[:T]/g, '-');
    const claimed = await this.srv.store.writer.putIfAbsent(`server/retention/runs/${minute}`, Buffer.from(JSON.stringify({ started: new Date().toISOString() })));
    if (!claimed) return;
    try {
      await this.run({ trigger: 'schedule' });
    } catch (err) {
      this.srv.log.error('scheduled retention failed', { err: String(err) });
    }
  }

  async lastRun(): Promise<RetentionRun | undefined> {
    const raw = await this.srv.store.driver.get(LAST_RUN);
    return raw ? (JSON.parse(raw.toString('utf8')) as RetentionRun) : undefined;
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
    const uploadsExpired = dryRun ? 0 : await new Uploads(srv.store).expire();
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
      await srv.store.writer.put(LAST_RUN, Buffer.from(JSON.stringify(run)));
      await srv.audit.record({ action: 'retention', token: actor.token, details: { deleted: deleted.length, bytes_freed: gcResult?.bytesFreed ?? 0, trigger: opts.trigger } }, true);
    }
    srv.log.info('retention run', { trigger: opts.trigger, dry_run: dryRun, deleted: deleted.length, bytes_freed: gcResult?.bytesFreed, gc_error: gcError });
    return run;
  }
}
