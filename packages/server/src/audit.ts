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
  constructor(private readonly store: Store) {}

  async record(entry: Omit<AuditEntry, 'id' | 'time'> & { time?: string }): Promise<AuditEntry> {
    const now = entry.time ? new Date(entry.time) : new Date();
    const day = now.toISOString().slice(0, 10);
    seq = (seq + 1) % 1_000_000;
    const id = `${String(now.getTime()).padStart(13, '0')}-${String(seq).padStart(6, '0')}-${randomBytes(4).toString('hex')}`;
    const full: AuditEntry = { ...stripUndefined(entry), id, time: now.toISOString() } as AuditEntry;
    await this.store.writer.put(`${PREFIX}${day}/${id}`, Buffer.from(JSON.stringify(full)));
    return full;
  }

  /** Entries matching `filter`, newest first (or oldest with `order=asc`), one page. */
  async query(filter: AuditFilter, page: Page): Promise<{ items: AuditEntry[]; limit: number; offset: number; order: string; next_offset: number | null }> {
    const sinceDay = filter.since?.slice(0, 10);
    const untilDay = filter.until?.slice(0, 10);
    let days = (await this.store.driver.listChildren(PREFIX)).filter(
      (d) => /^\d{4}-\d{2}-\d{2}$/.test(d) && (!sinceDay || d >= sinceDay) && (!untilDay || d <= untilDay),
    );
    if (page.order === 'desc') days = days.reverse();
    const sinceMs = filter.since ? Date.parse(filter.since) : -Infinity;
    const untilMs = filter.until ? Date.parse(filter.until) : Infinity;
    const items: AuditEntry[] = [];
    let skipped = 0;
    let more = false;
    for (const day of days) {
      let names = (await this.store.driver.listChildren(`${PREFIX}${day}/`)).filter((n) => {
        const ms = Number(n.slice(0, 13));
        return ms >= sinceMs && ms <= untilMs;
      });
      if (page.order === 'desc') names = names.reverse();
      // Read in slices so a large day does not read past what the page needs.
      for (let i = 0; i < names.length && !more; i += 64) {
        const slice = names.slice(i, i + 64);
        const read: (AuditEntry | undefined)[] = new Array(slice.length);
        await forEachLimit(slice.keys(), 16, async (j) => {
          const raw = await this.store.driver.get(`${PREFIX}${day}/${slice[j]}`);
          read[j] = raw ? (JSON.parse(raw.toString('utf8')) as AuditEntry) : undefined;
        });
        for (const e of read) {
          if (!e || !matches(e, filter)) continue;
          if (skipped < page.offset) {
            skipped++;
            continue;
          }
          if (items.length === page.limit) {
            more = true;
            break;
          }
          items.push(e);
        }
      }
      if (more) break;
    }
    return { items, limit: page.limit, offset: page.offset, order: page.order, next_offset: more ? page.offset + items.length : null };
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
