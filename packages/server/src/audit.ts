// Audit log (seed 11, DESIGN 9): one immutable object per entry under
// server/audit/<YYYY-MM-DD>/<ms>-<seq>-<rand>, so a day is one listing and names sort by time.
import { randomBytes } from 'node:crypto';
import { type Store, forEachLimit } from '@kk/core';
import type { Page } from './http.js';

export interface AuditEntry {
  id: string;
  time: string;
  /** push, pull, promote, rollback, delete, token.create, token.revoke, retention, upload. */
  action: string;
  project?: string;
  app?: string;
  version?: string;
  manifest?: string;
  channel?: string;
  /** The token that acted (`admin` for KK_ADMIN_TOKEN, `scheduler` for the nightly run). */
  token: string;
  /** The client's `X-Kk-Agent` header. */
  agent?: string;
  address?: string;
  details?: Record<string, unknown>;
}

export interface AuditFilter {
  action?: string;
  project?: string;
  app?: string;
  version?: string;
  token?: string;
  agent?: string;
  /** ISO times, inclusive. */
  since?: string;
  until?: string;
  /** Restrict to what a scoped admin may see. */
  visible?: (e: AuditEntry) => boolean;
}

const PREFIX = 'server/audit/';
let seq = 0;

export class AuditLog {
  /** Entries the store refused, retried in the background (same key: a retry never duplicates). */
  private backlog: { key: string; bytes: Buffer }[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Store,
    private readonly onLost: (err: unknown, entry: AuditEntry) => void = () => {},
  ) {}

  /**
   * Write an entry. With `deferOnFailure`, an entry the store refuses (after a few quick
   * retries) is kept and retried every second instead of failing the caller: the action it
   * records has already happened.
   */
  async record(entry: Omit<AuditEntry, 'id' | 'time'> & { time?: string }, deferOnFailure = false): Promise<AuditEntry> {
    const now = entry.time ? new Date(entry.time) : new Date();
    const day = now.toISOString().slice(0, 10);
    seq = (seq + 1) % 1_000_000;
    const id = `${String(now.getTime()).padStart(13, '0')}-${String(seq).padStart(6, '0')}-${randomBytes(4).toString('hex')}`;
    const full: AuditEntry = { ...stripUndefined(entry), id, time: now.toISOString() } as AuditEntry;
    const key = `${PREFIX}${day}/${id}`;
    const bytes = Buffer.from(JSON.stringify(full));
    for (let i = 1; ; i++) {
      try {
        await this.store.writer.put(key, bytes);
        return full;
      } catch (err) {
        if (i < 3) {
          await new Promise((r) => setTimeout(r, 20 * i));
          continue;
        }
        if (!deferOnFailure) throw err;
        this.onLost(err, full);
        this.backlog.push({ key, bytes });
        this.timer ??= setInterval(() => void this.retryBacklog(), 1000).unref();
        return full;
      }
    }
  }

  private async retryBacklog(): Promise<void> {
    for (const b of this.backlog.splice(0)) {
      await this.store.writer.put(b.key, b.bytes).catch(() => this.backlog.push(b));
    }
    if (!this.backlog.length) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** Try the backlog once more, then stop retrying. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.retryBacklog();
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * Entries matching `filter`, newest first (or oldest with `order=asc`), one page, and the
   * `total` of matches. Without field filters the total is the count of names in the window;
   * with them every entry in the window is read once.
   */
  async query(filter: AuditFilter, page: Page): Promise<{ items: AuditEntry[]; total: number; limit: number; offset: number; order: string; next_offset: number | null }> {
    const sinceDay = filter.since?.slice(0, 10);
    const untilDay = filter.until?.slice(0, 10);
    let days = (await this.store.driver.listChildren(PREFIX)).filter(
      (d) => /^\d{4}-\d{2}-\d{2}$/.test(d) && (!sinceDay || d >= sinceDay) && (!untilDay || d <= untilDay),
    );
    if (page.order === 'desc') days = days.reverse();
    const sinceMs = filter.since ? Date.parse(filter.since) : -Infinity;
    const untilMs = filter.until ? Date.parse(filter.until) : Infinity;
    const byFields = !!(filter.action || filter.project || filter.app || filter.version || filter.token || filter.agent || filter.visible);
    const items: AuditEntry[] = [];
    let total = 0;
    const read = async (day: string, names: string[]): Promise<(AuditEntry | undefined)[]> => {
      const out: (AuditEntry | undefined)[] = new Array(names.length);
      await forEachLimit(names.keys(), 16, async (j) => {
        const raw = await this.store.driver.get(`${PREFIX}${day}/${names[j]}`);
        out[j] = raw ? (JSON.parse(raw.toString('utf8')) as AuditEntry) : undefined;
      });
      return out;
    };
    for (const day of days) {
      let names = (await this.store.driver.listChildren(`${PREFIX}${day}/`)).filter((n) => {
        const ms = Number(n.slice(0, 13));
        return ms >= sinceMs && ms <= untilMs;
      });
      if (page.order === 'desc') names = names.reverse();
      if (!byFields) {
        // Only the names that fall on the page are read.
        const from = Math.max(0, page.offset - total);
        const to = Math.min(names.length, page.offset + page.limit - total);
        if (to > from) for (const e of await read(day, names.slice(from, to))) if (e) items.push(e);
        total += names.length;
        continue;
      }
      for (let i = 0; i < names.length; i += 64) {
        for (const e of await read(day, names.slice(i, i + 64))) {
          if (!e || !matches(e, filter)) continue;
          if (total >= page.offset && items.length < page.limit) items.push(e);
          total++;
        }
      }
    }
    const next = page.offset + items.length;
    return { items, total, limit: page.limit, offset: page.offset, order: page.order, next_offset: next < total ? next : null };
  }
}

function matches(e: AuditEntry, f: AuditFilter): boolean {
  if (f.action && e.action !== f.action) return false;
  if (f.project && e.project !== f.project) return false;
  if (f.app && e.app !== f.app) return false;
  if (f.version && e.version !== f.version) return false;
  if (f.token && e.token !== f.token) return false;
  if (f.agent && e.agent !== f.agent) return false;
  return !f.visible || f.visible(e);
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
