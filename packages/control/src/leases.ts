// Once-per-cluster work. Two primitives:
// - a named lease (one row: owner + expiry): whoever holds an unexpired lease does the work, renews
//   it while working, releases it when done; a holder that dies stops renewing and the lease
//   passes to the next instance that asks after it expires;
// - job runs, for scheduled work with a slot (the nightly retention's minute): the first instance
//   to claim (job, slot) runs it, renewing its lease; if it dies mid-run, another instance's
//   `claimStale` takes the run over once the lease has lapsed, so the slot still runs, once.
import type { ControlDb } from './db.js';

export interface Lease {
  name: string;
  owner: string;
  expires_ms: number;
}

export interface JobRun {
  job: string;
  slot: string;
  owner: string;
  state: 'running' | 'done' | 'failed';
  lease_until_ms: number;
  started: string;
  finished: string | null;
  /** 1 for the first owner; +1 for each takeover. */
  attempts: number;
}

export class Leases {
  constructor(private readonly cdb: ControlDb) {}

  /** Take or renew `name` for `owner` until now + ttlMs. True if `owner` holds it afterwards. */
  async acquire(name: string, owner: string, ttlMs: number, now = Date.now()): Promise<boolean> {
    return this.cdb.writeTx(async (tx) => {
      let q = tx.selectFrom('leases').selectAll().where('name', '=', name);
      if (this.cdb.skipLocked) q = q.forUpdate();
      const row = await q.executeTakeFirst();
      if (!row) {
        const r = await tx
          .insertInto('leases')
          .values({ name, owner, expires_ms: now + ttlMs, acquired: new Date(now).toISOString() })
          .onConflict((oc) => oc.column('name').doNothing())
          .executeTakeFirst();
        return Number(r.numInsertedOrUpdatedRows ?? 0) > 0;
      }
      if (row.owner !== owner && Number(row.expires_ms) > now) return false;
      const set = row.owner === owner ? { expires_ms: now + ttlMs } : { owner, expires_ms: now + ttlMs, acquired: new Date(now).toISOString() };
      await tx.updateTable('leases').set(set).where('name', '=', name).execute();
      return true;
    });
  }

  /** Give the lease up (only if `owner` holds it). */
  async release(name: string, owner: string): Promise<void> {
    await this.cdb.db.deleteFrom('leases').where('name', '=', name).where('owner', '=', owner).execute();
  }

  async holder(name: string, now = Date.now()): Promise<Lease | undefined> {
    const r = await this.cdb.db.selectFrom('leases').select(['name', 'owner', 'expires_ms']).where('name', '=', name).executeTakeFirst();
    return r && Number(r.expires_ms) > now ? { name: r.name, owner: r.owner, expires_ms: Number(r.expires_ms) } : undefined;
  }

  // ---- job runs ----

  /** Claim (job, slot) for `owner`: true for the first claimant only (or a takeover of a lapsed run). */
  async claimRun(job: string, slot: string, owner: string, ttlMs: number, now = Date.now()): Promise<boolean> {
    return this.cdb.writeTx(async (tx) => {
      const r = await tx
        .insertInto('job_runs')
        .values({ job, slot, owner, state: 'running', lease_until_ms: now + ttlMs, started: new Date(now).toISOString(), finished: null, attempts: 1 })
        .onConflict((oc) => oc.columns(['job', 'slot']).doNothing())
        .executeTakeFirst();
      if (Number(r.numInsertedOrUpdatedRows ?? 0) > 0) return true;
      return this.takeOver(tx, job, slot, owner, ttlMs, now);
    });
  }

  /** Runs of `job` whose owner stopped renewing: each is taken over by `owner` (at most `limit`). */
  async claimStale(job: string, owner: string, ttlMs: number, limit = 10, now = Date.now()): Promise<string[]> {
    return this.cdb.writeTx(async (tx) => {
      let q = tx.selectFrom('job_runs').select('slot').where('job', '=', job).where('state', '=', 'running').where('lease_until_ms', '<', now).orderBy('slot').limit(limit);
      if (this.cdb.skipLocked) q = q.forUpdate().skipLocked();
      const slots: string[] = [];
      for (const { slot } of await q.execute()) if (await this.takeOver(tx, job, slot, owner, ttlMs, now)) slots.push(slot);
      return slots;
    });
  }

  private async takeOver(tx: Parameters<Parameters<ControlDb['writeTx']>[0]>[0], job: string, slot: string, owner: string, ttlMs: number, now: number): Promise<boolean> {
    const r = await tx
      .updateTable('job_runs')
      .set((eb) => ({ owner, lease_until_ms: now + ttlMs, attempts: eb('attempts', '+', 1) }))
      .where('job', '=', job)
      .where('slot', '=', slot)
      .where('state', '=', 'running')
      .where('lease_until_ms', '<', now)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** Extend a running run's lease; false if `owner` no longer holds it. */
  async renewRun(job: string, slot: string, owner: string, ttlMs: number, now = Date.now()): Promise<boolean> {
    const r = await this.cdb.db
      .updateTable('job_runs')
      .set({ lease_until_ms: now + ttlMs })
      .where('job', '=', job)
      .where('slot', '=', slot)
      .where('owner', '=', owner)
      .where('state', '=', 'running')
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async finishRun(job: string, slot: string, owner: string, ok: boolean): Promise<boolean> {
    const r = await this.cdb.db
      .updateTable('job_runs')
      .set({ state: ok ? 'done' : 'failed', finished: new Date().toISOString() })
      .where('job', '=', job)
      .where('slot', '=', slot)
      .where('owner', '=', owner)
      .where('state', '=', 'running')
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async run(job: string, slot: string): Promise<JobRun | undefined> {
    const r = await this.cdb.db.selectFrom('job_runs').selectAll().where('job', '=', job).where('slot', '=', slot).executeTakeFirst();
    return r ? ({ ...r, lease_until_ms: Number(r.lease_until_ms), attempts: Number(r.attempts) } as JobRun) : undefined;
  }

  /** Run `fn` as (job, slot) if this instance claims it, renewing the lease every ttl/3. */
  async runOnce<T>(job: string, slot: string, owner: string, ttlMs: number, fn: () => Promise<T>): Promise<{ ran: true; result: T } | { ran: false }> {
    if (!(await this.claimRun(job, slot, owner, ttlMs))) return { ran: false };
    return { ran: true, result: await this.holding(job, slot, owner, ttlMs, fn) };
  }

  /** Run `fn` for a run `owner` already holds, renewing its lease; mark it done or failed. */
  async holding<T>(job: string, slot: string, owner: string, ttlMs: number, fn: () => Promise<T>): Promise<T> {
    const timer = setInterval(() => void this.renewRun(job, slot, owner, ttlMs).catch(() => {}), Math.max(50, Math.floor(ttlMs / 3)));
    timer.unref();
    try {
      const result = await fn();
      clearInterval(timer);
      await this.finishRun(job, slot, owner, true);
      return result;
    } catch (err) {
      clearInterval(timer);
      await this.finishRun(job, slot, owner, false).catch(() => {});
      throw err;
    }
  }
}
